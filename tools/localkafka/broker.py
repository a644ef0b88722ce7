"""A real, single-node Apache Kafka broker (KRaft) for local development and tests.

The broker jars are resolved from Maven Central with Maven (see ``pom.xml`` next
to this file) and cached in ``~/.cache/civicmeter/kafka-<version>/libs`` (the
``civicmeter`` cache root can be moved with ``CIVICMETER_CACHE_DIR``).  Needs
``java`` (17+) and, for the first fetch only, ``mvn`` on ``PATH``.

Typical use::

    with LocalKafka() as kafka:
        kafka.create_topics(["usage-events"], partitions=4)
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)

Everything said to the running broker (readiness, topic creation) goes through
aiokafka's admin client (see :mod:`tools.localkafka.admin`); ``LocalKafka.create_topics``
returns once every partition has a leader.  Auto-creation is on as well
(``num.partitions`` defaults to 4).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from . import admin

__all__ = [
    "KAFKA_VERSION",
    "PERF_TOOLS",
    "POM_PATH",
    "KafkaStartError",
    "LocalKafka",
    "cache_dir",
    "classpath",
    "ensure_jars",
    "java_executable",
    "perf_tool_cmd",
]

POM_PATH: Final[Path] = Path(__file__).resolve().with_name("pom.xml")
_POM_NS: Final[str] = "{http://maven.apache.org/POM/4.0.0}"


def _pom_property(name: str) -> str:
    root = ET.parse(POM_PATH).getroot()
    node = root.find(f"{_POM_NS}properties/{_POM_NS}{name}")
    if node is None or not (node.text or "").strip():
        raise RuntimeError(f"property {name!r} not found in {POM_PATH}")
    return (node.text or "").strip()


#: The Apache Kafka version; its one source of truth is ``<kafka.version>`` in pom.xml.
KAFKA_VERSION: Final[str] = _pom_property("kafka.version")

#: Short names accepted by :func:`perf_tool_cmd`, mapped to their main classes.
PERF_TOOLS: Final[Mapping[str, str]] = {
    "producer": "org.apache.kafka.tools.ProducerPerformance",
    "consumer": "org.apache.kafka.tools.ConsumerPerformance",
    "kafka-producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "kafka-consumer-perf-test": "org.apache.kafka.tools.ConsumerPerformance",
    "ProducerPerformance": "org.apache.kafka.tools.ProducerPerformance",
    "ConsumerPerformance": "org.apache.kafka.tools.ConsumerPerformance",
}

_MARKER_NAME: Final[str] = "libs.complete"
_TOOLS_LOG4J_NAME: Final[str] = "tools-log4j2.properties"

_TOOLS_LOG4J: Final[str] = """\
# Written by tools/localkafka: command-line tools log warnings to stderr only.
status = warn
name = civicmeter-localkafka-tools
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
"""

_BROKER_LOG4J: Final[str] = """\
# Written by tools/localkafka: the broker logs to ${sys:kafka.logs.dir}/server.log.
status = warn
name = civicmeter-localkafka-broker
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
"""


class KafkaStartError(RuntimeError):
    """The broker died or did not answer in time; the message ends with its log tail."""


# --------------------------------------------------------------------------- jars


def cache_dir() -> Path:
    """``$CIVICMETER_CACHE_DIR`` (default ``~/.cache/civicmeter``) ``/kafka-<version>``."""
    root = os.environ.get("CIVICMETER_CACHE_DIR")
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "civicmeter"
    return base / f"kafka-{KAFKA_VERSION}"


def _pom_fingerprint() -> str:
    return hashlib.sha256(POM_PATH.read_bytes()).hexdigest()[:16]


def _jars_ready(kafka_dir: Path, fingerprint: str) -> bool:
    marker = kafka_dir / _MARKER_NAME
    try:
        ok = marker.read_text(encoding="utf-8").strip() == fingerprint
    except OSError:
        return False
    return ok and (kafka_dir / "libs").is_dir() and (kafka_dir / _TOOLS_LOG4J_NAME).is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def ensure_jars(*, quiet: bool = False) -> Path:
    """Return the directory holding the Kafka jars, fetching them with Maven first if needed.

    The copy goes to ``libs.partial`` and is renamed to ``libs`` on success; a
    marker file holding a hash of pom.xml is written last, so an interrupted
    fetch, or a change to pom.xml, is redone on the next call.  Concurrent
    callers are serialised with a file lock.
    """
    kafka_dir = cache_dir()
    libs = kafka_dir / "libs"
    fingerprint = _pom_fingerprint()
    if _jars_ready(kafka_dir, fingerprint):
        return libs
    kafka_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(kafka_dir / ".lock"):
        if _jars_ready(kafka_dir, fingerprint):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError(
                f"Apache Kafka {KAFKA_VERSION} jars are not in {libs} and `mvn` is not on PATH; "
                "install Maven (e.g. `apt-get install maven`) to fetch them from Maven Central"
            )
        (kafka_dir / _MARKER_NAME).unlink(missing_ok=True)
        partial = kafka_dir / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        if not quiet:
            print(
                f"localkafka: fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central "
                f"into {libs} ...",
                file=sys.stderr,
                flush=True,
            )
        started = time.monotonic()
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM_PATH),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
        ]
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        jars = list(partial.glob("*.jar")) if partial.is_dir() else []
        if proc.returncode != 0 or not jars:
            output = (proc.stdout + proc.stderr).strip().splitlines()
            tail = "\n".join(output[-40:])
            raise RuntimeError(
                f"fetching Kafka jars failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        (kafka_dir / _TOOLS_LOG4J_NAME).write_text(_TOOLS_LOG4J, encoding="utf-8")
        (kafka_dir / _MARKER_NAME).write_text(fingerprint + "\n", encoding="utf-8")
        if not quiet:
            print(
                f"localkafka: {len(jars)} jars ready in {time.monotonic() - started:.1f}s",
                file=sys.stderr,
                flush=True,
            )
    return libs


def java_executable() -> str:
    """``$JAVA_HOME/bin/java`` if set, else ``java`` from PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise RuntimeError("`java` (17 or newer) is needed to run Kafka but is not on PATH")
    return found


def classpath() -> str:
    """The java ``-cp`` value for the cached jars (fetching them if needed)."""
    return str(ensure_jars() / "*")


def perf_tool_cmd(name: str, *args: str, heap: str = "256m") -> list[str]:
    """The command line that runs a Kafka perf tool with the cached classpath.

    ``name`` is ``"producer"``/``"consumer"``, the script name
    (``"kafka-producer-perf-test"``), the class name (``"ProducerPerformance"``)
    or any fully qualified main class (e.g. ``"org.apache.kafka.tools.TopicCommand"``).
    ``args`` are passed through, e.g.
    ``perf_tool_cmd("producer", "--topic", "t", "--num-records", "100000",
    "--record-size", "200", "--throughput", "-1",
    "--producer-props", f"bootstrap.servers={kafka.bootstrap_servers}")``.
    The tools log warnings only, to stderr; their report goes to stdout.
    """
    main_class = PERF_TOOLS.get(name, name)
    if "." not in main_class:
        known = ", ".join(sorted(PERF_TOOLS))
        raise ValueError(f"unknown perf tool {name!r}; use one of {known} or a full class name")
    libs = ensure_jars()
    return [
        java_executable(),
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={libs.parent / _TOOLS_LOG4J_NAME}",
        "-cp",
        str(libs / "*"),
        main_class,
        *args,
    ]


# ------------------------------------------------------------------------ broker


def _free_ports(count: int) -> list[int]:
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _random_cluster_id() -> str:
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _prop_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _error_lines(path: Path, count: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    found = [line for line in text.splitlines() if "] ERROR " in line or "] FATAL " in line]
    return "\n".join(found[-count:])


class LocalKafka:
    """A single-node KRaft Kafka (combined broker + controller) on 127.0.0.1.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.  Ports are
    picked free on loopback unless given.  ``data_dir`` defaults to a fresh temp
    dir that :meth:`stop` removes; a given ``data_dir`` is kept, and if it was
    formatted before, its topics and offsets are reused on the next start.

    Layout of ``data_dir``: ``server.properties``, ``log4j2.properties``,
    ``kraft/`` (log.dirs), ``logs/server.log`` (broker log) and ``logs/kafka.out``
    (JVM stdout/stderr).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        num_partitions: int = 4,
        heap_max: str = "512m",
        heap_min: str = "256m",
        extra_config: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self._given_dir = Path(data_dir).resolve() if data_dir is not None else None
        self._data_dir: Path | None = self._given_dir
        self._owns_dir = False
        self._fixed_port = port
        self._fixed_controller_port = controller_port
        self._port = port
        self._controller_port = controller_port
        self._log_offset = 0
        self._num_partitions = num_partitions
        self._heap_max = heap_max
        self._heap_min = heap_min
        self._extra_config = dict(extra_config or {})
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LocalKafka has not been started")
        return self._port

    @property
    def controller_port(self) -> int:
        if self._controller_port is None:
            raise RuntimeError("LocalKafka has not been started")
        return self._controller_port

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"``."""
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise RuntimeError("LocalKafka has not been started")
        return self._data_dir

    @property
    def log_path(self) -> Path:
        """The broker's log4j log file."""
        return self.data_dir / "logs" / "server.log"

    @property
    def pid(self) -> int | None:
        """Process id (= process group id) of the broker JVM while it runs."""
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The broker log's last ERROR lines, then the tails of the JVM output and the log."""
        if self._data_dir is None:
            return ""
        parts = []
        errors = _error_lines(self.log_path, 8)
        if errors:
            parts.append(f"--- errors in {self.log_path} ---\n{errors}")
        for path in (self.data_dir / "logs" / "kafka.out", self.log_path):
            text = _tail(path, lines)
            if text:
                parts.append(f"--- {path} ---\n{text}")
        return "\n".join(parts)

    # -- lifecycle

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Format storage if needed, start the JVM, and return once the broker answers.

        Raises :class:`KafkaStartError` (with the log tail) if the JVM exits or the
        broker does not serve metadata within ``startup_timeout`` seconds.
        """
        if self.is_running():
            return self
        libs = ensure_jars()
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="civicmeter-kafka-"))
            self._owns_dir = True
        deadline = time.monotonic() + self._startup_timeout
        pick_port = self._fixed_port is None
        pick_controller = self._fixed_controller_port is None
        attempt = 0
        while True:
            attempt += 1
            if pick_port or pick_controller:
                free = _free_ports(2)
                self._port = free[0] if pick_port else self._port
                self._controller_port = free[1] if pick_controller else self._controller_port
            try:
                self._launch(libs)
                self._wait_ready(deadline)
                return self
            except KafkaStartError:
                # A picked port may have been taken between picking and binding: retry.
                retry = (
                    (pick_port or pick_controller)
                    and attempt < 3
                    and "Address already in use" in self._read_new_log()
                )
                self._kill()
                if not retry:
                    self.stop()
                    raise
            except BaseException:
                self.stop()
                raise

    def _read_new_log(self) -> str:
        """What the broker logged since the last launch."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._log_offset)
                return handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _kill(self, timeout: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the broker's process group (SIGKILL after ``timeout`` s).

        Removes the data dir if it was a temp dir made by :meth:`start`.
        """
        self._kill(timeout)
        if self._owns_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
            self._owns_dir = False

    def detach(self) -> int:
        """Leave the broker running past this object (for ``start --dir``); returns its pid."""
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("broker is not running")
        pid = self._proc.pid
        self._proc = None
        self._owns_dir = False
        return pid

    def _write_config(self) -> Path:
        data_dir = self.data_dir
        (data_dir / "logs").mkdir(parents=True, exist_ok=True)
        kraft_dir = data_dir / "kraft"
        config: dict[str, str] = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(kraft_dir),
            "num.partitions": str(self._num_partitions),
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            # Never delete by age: records with old CreateTime (backfills) must not vanish.
            "log.retention.ms": "-1",
        }
        config.update(self._extra_config)
        path = data_dir / "server.properties"
        lines = ["# Written by tools/localkafka (single-node KRaft, loopback only)."]
        lines += [f"{key}={_prop_escape(value)}" for key, value in config.items()]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        (data_dir / "log4j2.properties").write_text(_BROKER_LOG4J, encoding="utf-8")
        return path

    def _java_base(self, libs: Path) -> list[str]:
        return [
            java_executable(),
            f"-Xms{self._heap_min}",
            f"-Xmx{self._heap_max}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            # Kafka shuts down in its own hook; keep log4j alive until the JVM exits.
            "-Dlog4j2.shutdownHookEnabled=false",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            str(libs / "*"),
        ]

    def _format_storage(self, libs: Path, properties: Path) -> None:
        if (self.data_dir / "kraft" / "meta.properties").is_file():
            return  # formatted on an earlier start: keep the data
        cmd = [
            java_executable(),
            # A short-lived tool: C1 only and serial GC start noticeably faster.
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={libs.parent / _TOOLS_LOG4J_NAME}",
            "-cp",
            str(libs / "*"),
            "kafka.tools.StorageTool",
            "format",
            "--config",
            str(properties),
            "--cluster-id",
            _random_cluster_id(),
            "--ignore-formatted",
        ]
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise KafkaStartError(
                f"formatting Kafka storage failed (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr).strip()}"
            )

    def _launch(self, libs: Path) -> None:
        properties = self._write_config()
        self._format_storage(libs, properties)
        cmd = [*self._java_base(libs), "kafka.Kafka", str(properties)]
        try:
            self._log_offset = self.log_path.stat().st_size
        except OSError:
            self._log_offset = 0
        with (self.data_dir / "logs" / "kafka.out").open("ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )

    def _wait_ready(self, deadline: float) -> None:
        last_error = "no attempt"
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise KafkaStartError(
                    f"Kafka exited during startup (exit code {code})\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaStartError(
                    f"Kafka did not become ready within {self._startup_timeout:.0f}s "
                    f"(last error: {last_error})\n{self.log_tail()}"
                )
            try:
                if admin.broker_count(self.bootstrap_servers, min(2.0, remaining)) > 0:
                    return
                last_error = "metadata lists no broker yet"
            except OSError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    # -- topics

    def create_topics(
        self,
        names: Iterable[str],
        partitions: int | None = None,
        *,
        replication_factor: int = 1,
        config: Mapping[str, str] | None = None,
        exist_ok: bool = True,
        timeout: float = 30.0,
    ) -> None:
        """Create topics (``partitions`` defaults to ``num_partitions``) and wait for leaders.

        An existing topic is fine when ``exist_ok`` (its partition count is not
        changed).  Raises ``RuntimeError`` for any other per-topic error.
        """
        admin.create_topics(
            self.bootstrap_servers,
            names,
            self._num_partitions if partitions is None else partitions,
            replication_factor=replication_factor,
            config=config,
            exist_ok=exist_ok,
            timeout=timeout,
        )
