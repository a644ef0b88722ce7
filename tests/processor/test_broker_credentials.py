"""The processor's faust app connects with the same security options as every other Kafka
client of the services (core.kafka.client_options), whatever the protocol."""

from __future__ import annotations

import ssl

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from civicmeter.core.config import KafkaSettings
from civicmeter.core.kafka import client_options
from civicmeter.processor.app import broker_credentials


def sasl(protocol: str, mechanism: str | None = None) -> KafkaSettings:
    return KafkaSettings(
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username="processor",
        sasl_password="s3cret",
    )


@pytest.mark.parametrize(
    "kafka",
    [
        KafkaSettings(),
        KafkaSettings(security_protocol="SSL"),
        sasl("SASL_PLAINTEXT"),
        sasl("SASL_SSL"),
        sasl("SASL_SSL", "PLAIN"),
        sasl("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    ],
    ids=lambda k: f"{k.security_protocol}-{k.sasl_mechanism}",
)
def test_faust_gets_the_options_every_aiokafka_client_gets(kafka: KafkaSettings) -> None:
    expected = {k: v for k, v in client_options(kafka).items() if k != "bootstrap_servers"}
    given = dict(credentials_to_aiokafka_auth(broker_credentials(kafka)))
    # Each call makes its own SSL context: compare what they check, not their identity.
    contexts = expected.pop("ssl_context", None), given.pop("ssl_context", None)
    assert given == expected
    if contexts[0] is None:
        assert contexts[1] is None
    else:
        assert isinstance(contexts[1], ssl.SSLContext)
        assert contexts[1].verify_mode == contexts[0].verify_mode == ssl.CERT_REQUIRED
        assert contexts[1].check_hostname


def test_sasl_defaults_to_scram_sha_512() -> None:
    credentials = broker_credentials(sasl("SASL_SSL"))
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("processor", "s3cret")
