"""Limits of the usage-event contract that both the SDK's encoder and ingest's validation hold."""

MAX_RULE_IDS = 32  # the policy rules one decision names
# Kinds of personal information in one event: the map is the only field without a natural
# bound, and an event must stay far below a Kafka record (the SDK's detector knows a handful).
MAX_PII_KINDS = 64
