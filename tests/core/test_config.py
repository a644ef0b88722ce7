"""Settings from the environment: the ingest's gateway authentication and TLS."""

from pathlib import Path

import pytest

from civicmeter.core.config import ConfigError, IngestSettings, ProcessorSettings, TlsFiles


def test_ingest_reads_its_key_file_tls_and_refusal_rate() -> None:
    settings = IngestSettings.from_env({
        "CIVICMETER_INGEST_KEYS_FILE": "/etc/civicmeter/gateway-keys/hashes",
        "CIVICMETER_INGEST_TLS_CERT": "/tls/tls.crt",
        "CIVICMETER_INGEST_TLS_KEY": "/tls/tls.key",
        "CIVICMETER_INGEST_TLS_CLIENT_CA": "/tls/ca.crt",
        "CIVICMETER_INGEST_REFUSED_RATE_PER_PEER": "0",
    })  # fmt: skip
    assert settings.keys_file == Path("/etc/civicmeter/gateway-keys/hashes")
    assert settings.tls.cert == Path("/tls/tls.crt") and settings.tls.key == Path("/tls/tls.key")
    assert settings.tls.client_ca == Path("/tls/ca.crt")
    assert settings.refused_rate_per_peer == 0


def test_without_settings_ingest_is_open_and_plaintext() -> None:
    settings = IngestSettings.from_env({})
    assert settings.keys_file is None
    assert settings.tls == TlsFiles(prefix="CIVICMETER_INGEST_TLS")
    assert settings.refused_rate_per_peer > 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CIVICMETER_INGEST_TLS_CERT": "c"},
            "_TLS_CERT and CIVICMETER_INGEST_TLS_KEY go together",
        ),
        ({"CIVICMETER_INGEST_TLS_KEY": "k"}, "_TLS_CERT and CIVICMETER_INGEST_TLS_KEY go together"),
        ({"CIVICMETER_INGEST_TLS_CLIENT_CA": "ca"}, "_CLIENT_CA needs"),
        ({"CIVICMETER_INGEST_REFUSED_RATE_PER_PEER": "many"}, "must be a number"),
    ],
)
def test_incomplete_tls_or_a_bad_rate_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        IngestSettings.from_env(env)


@pytest.mark.parametrize("settings", [IngestSettings, ProcessorSettings])
def test_what_ingest_and_the_processor_produce_is_compressed_only_when_asked(
    settings: type[IngestSettings] | type[ProcessorSettings],
) -> None:
    assert settings.from_env({}).compression == "none"
    assert settings.from_env({"KAFKA_COMPRESSION_TYPE": "LZ4"}).compression == "lz4"
    with pytest.raises(ConfigError) as refused:
        settings.from_env({"KAFKA_COMPRESSION_TYPE": "brotli"})
    assert str(refused.value) == (
        "KAFKA_COMPRESSION_TYPE must be one of none, gzip, snappy, lz4, zstd, got 'brotli'"
    )
