import civicmeter.gateway


def test_the_gateway_sdk_exports_exactly_its_public_names() -> None:
    # Changing what gateways import is a deliberate act: update this list with it.
    assert sorted(civicmeter.gateway.__all__) == [
        "DOCUMENT_MARKINGS",
        "DocumentDetector",
        "Guard",
        "IngestRejectedError",
        "PII_TYPES",
        "PiiDetector",
        "Redaction",
        "RequestFacts",
        "UsageEmitter",
        "Verdict",
        "detect_document_markings",
        "detect_pii",
        "pseudonymise_user",
        "redact_pii",
    ]
    for name in civicmeter.gateway.__all__:
        assert getattr(civicmeter.gateway, name) is not None
