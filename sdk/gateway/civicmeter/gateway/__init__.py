"""The gateway SDK: what an AI gateway embeds to meter requests before they leave.

    from civicmeter.gateway import UsageEmitter, detect_pii, pseudonymise_user

    event.user_id = pseudonymise_user(org_key, "kim.minji")   # keyed HMAC, never the name
    event.risk.pii_findings.update(detect_pii(prompt))        # counts by type, never the text
    async with UsageEmitter("http://ingest:8080") as emitter:
        await emitter.emit(event)

`detect_pii` and `PiiDetector` find Korean personal information (resident and foreigner
registration numbers, passports, driver licences, phone numbers, business registration
numbers, e-mail addresses, bank accounts) and report how many of each, nothing more;
`redact_pii` returns the prompt with each of those masked in place (900101-1******,
010-****-5678) for a gateway that forwards a redacted request.
`detect_document_markings` and `DocumentDetector` count the markings of public documents
pasted into a prompt (classification and handling markings, disclosure decisions, document
numbers, approval blocks, declared personal information), by class (`DOCUMENT_MARKINGS`).
`Guard` decides on a request before it leaves (allow, warn, redact or deny) under the
organisation's policy, which it receives from civicmeter's decision service (or a file), on the
gateway itself: the prompt never leaves it.
"""

from civicmeter.gateway.documents import (
    DOCUMENT_MARKINGS,
    DocumentDetector,
    detect_document_markings,
)
from civicmeter.gateway.emitter import IngestRejectedError, UsageEmitter
from civicmeter.gateway.guard import Guard, RequestFacts, Verdict
from civicmeter.gateway.identity import pseudonymise_user
from civicmeter.gateway.pii import PII_TYPES, PiiDetector, Redaction, detect_pii, redact_pii

__all__ = [
    "DOCUMENT_MARKINGS",
    "PII_TYPES",
    "DocumentDetector",
    "Guard",
    "IngestRejectedError",
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
