"""The gateway SDK: what an AI gateway embeds before a request leaves the organisation.

    from civicmeter.gateway import detect_pii

    event.risk.pii_findings.update(detect_pii(prompt))   # counts by type, never the text

`detect_pii` and `PiiDetector` find Korean personal information (resident and foreigner
registration numbers, passports, driver licences, phone numbers, business registration
numbers, e-mail addresses, bank accounts) and report how many of each, nothing more.
"""

from civicmeter.gateway.pii import PII_TYPES, PiiDetector, detect_pii

__all__ = ["PII_TYPES", "PiiDetector", "detect_pii"]
