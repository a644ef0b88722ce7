"""Typed, frozen settings built from the environment in each service's main().

Variable names follow the clients' own options (KAFKA_BOOTSTRAP_SERVERS, CLICKHOUSE_HOST, ...);
telemetry is configured by the standard OTEL_* variables, read by the OpenTelemetry SDK.
Nothing here reads the environment at import time: callers pass a mapping in. A malformed
value is a ConfigError naming the variable and the form it must take; every number has the
bounds its use needs, so a negative port or a NaN interval fails at start-up, not later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from civicmeter.core.events.validation import TimeWindow


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


MAX_PORT = 65_535
# Bound on durations given in days or seconds: far beyond any sensible value, and well inside
# what timedelta holds (a larger value would overflow it rather than be refused).
MAX_DAYS = 36_500
MAX_SECONDS = MAX_DAYS * 86_400


def env_int(
    env: Mapping[str, str],
    name: str,
    default: int,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """The integer variable `name` (`default` when unset or empty), within [minimum, maximum]."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if (
        value is None
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        if minimum is not None and maximum is not None:
            form = f"an integer from {minimum} to {maximum}"
        elif minimum is not None:
            form = f"an integer of at least {minimum}"
        else:
            form = "an integer" if maximum is None else f"an integer of at most {maximum}"
        raise ConfigError(f"{name} must be {form}, got {raw!r}")
    return value


def env_port(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    """A TCP port (0, where allowed, lets the system choose a free one)."""
    return env_int(env, name, default, minimum, MAX_PORT)


def env_float(
    env: Mapping[str, str],
    name: str,
    default: float,
    minimum: float | None = None,
    above_minimum: bool = False,  # the minimum itself is refused (a period of 0 s)
) -> float:
    """The finite number variable `name` (`default` when unset or empty), at least `minimum`
    (or greater than it)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if minimum is None:
        bad = not math.isfinite(value)
        form = "a number"
    else:
        bad = not math.isfinite(value) or value < minimum or (above_minimum and value == minimum)
        form = f"a number {'greater than' if above_minimum else 'of at least'} {minimum:g}"
    if bad:
        raise ConfigError(f"{name} must be {form}, got {raw!r}")
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw) if raw else None


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """The variable `name`, or the content of the file `name`_FILE names (a mounted Secret,
    kept out of the process environment); one trailing line break is dropped."""
    path = env.get(f"{name}_FILE")
    if not path:
        return env.get(name)
    if env.get(name):
        raise ConfigError(f"{name} and {name}_FILE are both set: set one")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError(f"{name}_FILE: cannot read {path!r}: {reason}") from None
    return text.removesuffix("\n").removesuffix("\r")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")


def compression_from_env(env: Mapping[str, str], default: str) -> str:
    """KAFKA_COMPRESSION_TYPE: how ingest and the processor compress what they produce."""
    raw = env.get("KAFKA_COMPRESSION_TYPE") or default
    if raw.lower() not in COMPRESSION_TYPES:
        raise ConfigError(
            f"KAFKA_COMPRESSION_TYPE must be one of {', '.join(COMPRESSION_TYPES)}, got {raw!r}"
        )
    return raw.lower()


def time_window_from_env(env: Mapping[str, str]) -> TimeWindow:
    """How old or how far ahead an event's time may be (history replays raise the age)."""
    default = TimeWindow()
    return TimeWindow(
        max_age=timedelta(
            days=env_int(env, "CIVICMETER_MAX_EVENT_AGE_DAYS", default.max_age.days, 1, MAX_DAYS)
        ),
        max_future=timedelta(
            seconds=env_int(
                env,
                "CIVICMETER_MAX_EVENT_FUTURE_SECONDS",
                int(default.max_future.total_seconds()),
                0,
                MAX_SECONDS,
            )
        ),
    )


@dataclass(frozen=True)
class TlsFiles:
    """A server's TLS: certificate and key; a client CA as well requires client certificates
    (mutual TLS), whose common name may stand for a key id. All None: plaintext."""

    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None
    prefix: str = "CIVICMETER_TLS"  # the variables' prefix, for error messages

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str) -> TlsFiles:
        files = cls(
            _path(env, f"{prefix}_CERT"),
            _path(env, f"{prefix}_KEY"),
            _path(env, f"{prefix}_CLIENT_CA"),
            prefix,
        )
        if (files.cert is None) != (files.key is None):
            raise ConfigError(f"{prefix}_CERT and {prefix}_KEY go together")
        if files.client_ca is not None and files.cert is None:
            raise ConfigError(f"{prefix}_CLIENT_CA needs {prefix}_CERT and {prefix}_KEY")
        return files


@dataclass(frozen=True)
class TopicSettings:
    raw: str = "usage.raw"
    rated: str = "usage.rated"
    dlq: str = "usage.dlq"
    alerts: str = "usage.alerts"
    partitions: int = 4
    replication_factor: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TopicSettings:
        return cls(
            raw=env.get("CIVICMETER_TOPIC_RAW", cls.raw),
            rated=env.get("CIVICMETER_TOPIC_RATED", cls.rated),
            dlq=env.get("CIVICMETER_TOPIC_DLQ", cls.dlq),
            alerts=env.get("CIVICMETER_TOPIC_ALERTS", cls.alerts),
            partitions=env_int(env, "CIVICMETER_TOPIC_PARTITIONS", cls.partitions, 1),
            replication_factor=env_int(
                env, "CIVICMETER_TOPIC_REPLICATION_FACTOR", cls.replication_factor, 1
            ),
        )


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    create_topics: bool = True
    topics: TopicSettings = field(default_factory=TopicSettings)
    # Static group membership: a restarted consumer with the same id takes its partitions back
    # at once instead of waiting for the broker to expire the dead member. One id per process
    # (a group sees one member per id); None: dynamic membership.
    group_instance_id: str | None = None
    # How long a silent member keeps its partitions (faust's own default is 60 s).
    session_timeout_ms: int = 10_000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSettings:
        protocol = env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
        if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ConfigError(
                f"KAFKA_SECURITY_PROTOCOL must be one of PLAINTEXT, SSL, "
                f"SASL_PLAINTEXT, SASL_SSL; got {protocol!r}"
            )
        return cls(
            bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", cls.bootstrap_servers),
            security_protocol=protocol,
            sasl_mechanism=env.get("KAFKA_SASL_MECHANISM") or None,
            sasl_username=env.get("KAFKA_SASL_USERNAME") or None,
            sasl_password=_secret(env, "KAFKA_SASL_PASSWORD") or None,
            ssl_cafile=env.get("KAFKA_SSL_CAFILE") or None,
            create_topics=_bool(env, "CIVICMETER_CREATE_TOPICS", cls.create_topics),
            topics=TopicSettings.from_env(env),
            group_instance_id=env.get("KAFKA_GROUP_INSTANCE_ID") or None,
            session_timeout_ms=env_int(
                env, "KAFKA_SESSION_TIMEOUT_MS", cls.session_timeout_ms, 1, MAX_SECONDS
            ),
        )


@dataclass(frozen=True)
class ClickHouseSettings:
    """`interface="chdb"` is the embedded engine at `path`; "http"/"https" a server."""

    interface: str = "chdb"
    path: str = ".civicmeter/chdb"
    host: str = "localhost"
    port: int = 8123
    username: str = "default"
    password: str = ""
    database: str = "civicmeter"
    ca_cert: str | None = None  # a private CA (PEM file) for https; None: the system's

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ClickHouseSettings:
        interface = env.get("CLICKHOUSE_INTERFACE", cls.interface)
        if interface not in ("chdb", "http", "https"):
            raise ConfigError(
                f"CLICKHOUSE_INTERFACE must be chdb, http or https; got {interface!r}"
            )
        return cls(
            interface=interface,
            path=env.get("CLICKHOUSE_PATH", cls.path),
            host=env.get("CLICKHOUSE_HOST", cls.host),
            port=env_port(env, "CLICKHOUSE_PORT", 8443 if interface == "https" else cls.port, 1),
            username=env.get("CLICKHOUSE_USERNAME", cls.username),
            password=_secret(env, "CLICKHOUSE_PASSWORD") or cls.password,
            database=env.get("CLICKHOUSE_DATABASE", cls.database),
            ca_cert=env.get("CLICKHOUSE_CA_CERT") or None,
        )


@dataclass(frozen=True)
class IngestSettings:
    kafka: KafkaSettings
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 50051
    max_batch_events: int = 10_000
    max_body_bytes: int = 16 * 1024 * 1024
    linger_ms: int = 20
    # usage.raw uncompressed: aiokafka's lz4 (level 9) costs ingest ~1.3 µs CPU an event to save
    # ~120 bytes of it, and neither the broker nor the processor was measurably cheaper for it
    # (loadtests/ingest_cpu.py). KAFKA_COMPRESSION_TYPE=lz4 where bytes cost more than CPU.
    compression: str = "none"
    time_window: TimeWindow = field(default_factory=TimeWindow)
    keys_file: Path | None = None  # gateway keys (hashed); None: ingest is open (development only)
    tls: TlsFiles = field(default_factory=lambda: TlsFiles())
    # Calls refused for want of a valid credential, a second per peer address (bursts of
    # twice that); past it such calls get 429 / RESOURCE_EXHAUSTED. 0: no limit.
    refused_rate_per_peer: float = 5.0
    # How long a batch may wait for Kafka's acknowledgement before the caller is told to retry
    # (503 / UNAVAILABLE); its events may still land, and a retry with the same ids is counted
    # once.
    publish_timeout_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IngestSettings:
        return cls(
            kafka=KafkaSettings.from_env(env),
            http_host=env.get("CIVICMETER_INGEST_HOST", cls.http_host),
            http_port=env_port(env, "CIVICMETER_INGEST_HTTP_PORT", cls.http_port),
            grpc_port=env_port(env, "CIVICMETER_INGEST_GRPC_PORT", cls.grpc_port),
            max_batch_events=env_int(
                env, "CIVICMETER_INGEST_MAX_BATCH_EVENTS", cls.max_batch_events, 1
            ),
            max_body_bytes=env_int(env, "CIVICMETER_INGEST_MAX_BODY_BYTES", cls.max_body_bytes, 1),
            linger_ms=env_int(env, "KAFKA_LINGER_MS", cls.linger_ms, 0, MAX_SECONDS),
            compression=compression_from_env(env, cls.compression),
            time_window=time_window_from_env(env),
            keys_file=_path(env, "CIVICMETER_INGEST_KEYS_FILE"),
            tls=TlsFiles.from_env(env, "CIVICMETER_INGEST_TLS"),
            refused_rate_per_peer=env_float(
                env, "CIVICMETER_INGEST_REFUSED_RATE_PER_PEER", cls.refused_rate_per_peer, 0
            ),
            publish_timeout_seconds=env_float(
                env,
                "CIVICMETER_INGEST_PUBLISH_TIMEOUT_SECONDS",
                cls.publish_timeout_seconds,
                0,
                above_minimum=True,
            ),
        )


@dataclass(frozen=True)
class ProcessorSettings:
    kafka: KafkaSettings
    group_id: str = "civicmeter-processor"
    prices_file: Path = Path("config/prices.yaml")
    prices_reload_seconds: float = 10.0  # how often the catalog files are checked; 0: never
    policy_file: Path = Path("config/policies.yaml")
    batch_size: int = 64  # usage.raw records (each a batch of events) per micro-batch
    batch_within_seconds: float = 0.2
    # How long detector state (and so the commit of the records it counts) may wait to be
    # written: a key changed many times in this long is written once (processor/state_flush.py).
    state_interval_seconds: float = 5.0
    # usage.rated uncompressed, as usage.raw: aiokafka's lz4 (level 9) cost the processor ~1.5 µs
    # CPU an event (about 5% of its CPU) to save ~145 of an event's ~200 bytes.
    compression: str = "none"
    data_dir: Path = Path(".civicmeter/processor")
    time_window: TimeWindow = field(default_factory=TimeWindow)
    allowed_lateness: timedelta = timedelta(hours=1)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProcessorSettings:
        return cls(
            kafka=KafkaSettings.from_env(env),
            group_id=env.get("CIVICMETER_PROCESSOR_GROUP_ID", cls.group_id),
            prices_file=Path(env.get("CIVICMETER_PRICES_FILE", str(cls.prices_file))),
            prices_reload_seconds=env_float(
                env, "CIVICMETER_PRICES_RELOAD_SECONDS", cls.prices_reload_seconds, 0
            ),
            policy_file=Path(env.get("CIVICMETER_POLICY_FILE", str(cls.policy_file))),
            batch_size=env_int(env, "CIVICMETER_PROCESSOR_BATCH_SIZE", cls.batch_size, 1),
            state_interval_seconds=env_float(
                env,
                "CIVICMETER_PROCESSOR_STATE_INTERVAL_SECONDS",
                cls.state_interval_seconds,
                0,
                above_minimum=True,
            ),
            compression=compression_from_env(env, cls.compression),
            data_dir=Path(env.get("CIVICMETER_PROCESSOR_DATA_DIR", str(cls.data_dir))),
            time_window=time_window_from_env(env),
            allowed_lateness=timedelta(
                seconds=env_int(
                    env,
                    "CIVICMETER_ALLOWED_LATENESS_SECONDS",
                    int(cls.allowed_lateness.total_seconds()),
                    0,
                    MAX_SECONDS,
                )
            ),
        )


@dataclass(frozen=True)
class SinkSettings:
    kafka: KafkaSettings
    clickhouse: ClickHouseSettings
    group_id: str = "civicmeter-sink"
    # usage.rated records (each a batch of events) per write, at most. A write's engine CPU is
    # partly fixed (parts of the staging table, the ledger and each rollup, and their merges):
    # in process, 400,000 events in blocks of 200 records of 170 events took 4.7-5.1 CPU
    # seconds, in blocks of 600 2.6-2.8 (of 1,000 no fewer).
    max_batch_records: int = 600
    max_batch_wait_ms: int = 500

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SinkSettings:
        return cls(
            kafka=KafkaSettings.from_env(env),
            clickhouse=ClickHouseSettings.from_env(env),
            group_id=env.get("CIVICMETER_SINK_GROUP_ID", cls.group_id),
            max_batch_records=env_int(
                env, "CIVICMETER_SINK_MAX_BATCH_RECORDS", cls.max_batch_records, 1
            ),
            max_batch_wait_ms=env_int(
                env, "CIVICMETER_SINK_MAX_BATCH_WAIT_MS", cls.max_batch_wait_ms, 0, MAX_SECONDS
            ),
        )


@dataclass(frozen=True)
class QuerySettings:
    clickhouse: ClickHouseSettings
    host: str = "127.0.0.1"
    grpc_port: int = 50052
    reflection: bool = True
    api_keys_file: Path | None = None  # None: the API is open (development only)
    # TLS: a certificate and key serve TLS; a client CA as well requires client certificates
    # (mutual TLS), whose common name may stand for an API key id.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    rate_per_key: float = 200.0  # calls a second per API key (bursts of twice that); 0: off
    cache_seconds: float = 0.5  # how long an answer is reused for the same question; 0: off
    policy_file: Path = Path("config/policies.yaml")  # the budgets BudgetService reports on
    # Keys that sign page tokens, the current one first; older ones are still accepted, for
    # rotation. Empty: a random key per process (tokens then die with it).
    page_token_keys: tuple[str, ...] = ()
    prices_file: Path | None = None  # the catalog whose unit prices the FOCUS export shows

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> QuerySettings:
        listed = env.get("CIVICMETER_PAGE_TOKEN_KEYS", "").split(",")
        token_keys = tuple(key.strip() for key in listed if key.strip())
        if any(len(key) < 32 for key in token_keys):
            raise ConfigError("CIVICMETER_PAGE_TOKEN_KEYS: each key needs 32 characters or more")
        return cls(
            clickhouse=ClickHouseSettings.from_env(env),
            host=env.get("CIVICMETER_QUERY_HOST", cls.host),
            grpc_port=env_port(env, "CIVICMETER_QUERY_GRPC_PORT", cls.grpc_port),
            reflection=_bool(env, "CIVICMETER_QUERY_REFLECTION", cls.reflection),
            api_keys_file=_path(env, "CIVICMETER_API_KEYS_FILE"),
            tls_cert_file=_path(env, "CIVICMETER_QUERY_TLS_CERT"),
            tls_key_file=_path(env, "CIVICMETER_QUERY_TLS_KEY"),
            tls_client_ca_file=_path(env, "CIVICMETER_QUERY_TLS_CLIENT_CA"),
            rate_per_key=env_float(env, "CIVICMETER_QUERY_RATE_PER_KEY", cls.rate_per_key, 0),
            cache_seconds=env_float(env, "CIVICMETER_QUERY_CACHE_SECONDS", cls.cache_seconds, 0),
            policy_file=Path(env.get("CIVICMETER_POLICY_FILE", str(cls.policy_file))),
            page_token_keys=token_keys,
            prices_file=_path(env, "CIVICMETER_PRICES_FILE"),
        )


@dataclass(frozen=True)
class NotifierSettings:
    clickhouse: ClickHouseSettings
    policy_file: Path = Path("config/policies.yaml")
    poll_seconds: float = 1.0
    max_attempts: int = 5
    retry_base_seconds: float = 0.5
    webhook_timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NotifierSettings:
        return cls(
            clickhouse=ClickHouseSettings.from_env(env),
            policy_file=Path(env.get("CIVICMETER_POLICY_FILE", str(cls.policy_file))),
            max_attempts=env_int(env, "CIVICMETER_NOTIFIER_MAX_ATTEMPTS", cls.max_attempts, 1),
        )


@dataclass(frozen=True)
class BillingSettings:
    """The billing service: seat charges from the seat records, and budget alerts (both
    produced to Kafka; ClickHouse is read, and holds the seat bookkeeping)."""

    clickhouse: ClickHouseSettings
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    prices_file: Path = Path("config/prices.yaml")
    policy_file: Path = Path("config/policies.yaml")
    seats_file: Path | None = None
    interval_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BillingSettings:
        seats = env.get("CIVICMETER_SEATS_FILE")
        return cls(
            clickhouse=ClickHouseSettings.from_env(env),
            kafka=KafkaSettings.from_env(env),
            prices_file=Path(env.get("CIVICMETER_PRICES_FILE", str(cls.prices_file))),
            policy_file=Path(env.get("CIVICMETER_POLICY_FILE", str(cls.policy_file))),
            seats_file=Path(seats) if seats else None,
            interval_seconds=env_float(
                env,
                "CIVICMETER_BILLING_INTERVAL_SECONDS",
                cls.interval_seconds,
                0,
                above_minimum=True,
            ),
        )
