-- Every call to the query API: who, what, for which organisation, when, and the result.
CREATE TABLE IF NOT EXISTS audit_log
(
    call_time              DateTime64(3, 'UTC'),
    key_id                 String,
    principal_organization LowCardinality(String),
    role                   LowCardinality(String),
    method                 LowCardinality(String),
    organization_id        String,
    status                 LowCardinality(String),
    duration_ms            UInt32,
    peer                   String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(call_time)
ORDER BY (principal_organization, call_time);
