-- Every occurrence of an alert, one row per (dedup key, triggering event): redelivery folds.
CREATE TABLE IF NOT EXISTS alert_occurrences
(
    organization_id  LowCardinality(String),
    dedup_key        String,
    trigger_event_id String,
    alert_type       LowCardinality(String),
    severity         UInt8,
    department_id    LowCardinality(String),
    user_id          String,
    service_id       LowCardinality(String),
    provider_name    LowCardinality(String),
    event_time       DateTime64(3, 'UTC'),
    explanation      String,
    attributes       Map(String, String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (organization_id, dedup_key, trigger_event_id);

-- One row per alert, written when its dedup key is first stored: what ListAlerts pages through,
-- WatchAlerts tails and the notifier delivers. opened_time is when it became visible here.
CREATE TABLE IF NOT EXISTS alerts_opened
(
    organization_id  LowCardinality(String),
    dedup_key        String,
    trigger_event_id String,
    alert_type       LowCardinality(String),
    severity         UInt8,
    department_id    LowCardinality(String),
    user_id          String,
    service_id       LowCardinality(String),
    provider_name    LowCardinality(String),
    event_time       DateTime64(3, 'UTC'),
    explanation      String,
    attributes       Map(String, String),
    opened_time      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (organization_id, dedup_key);

-- State changes (acknowledged, resolved); the latest per alert wins.
CREATE TABLE IF NOT EXISTS alert_states
(
    organization_id LowCardinality(String),
    dedup_key       String,
    state           UInt8,
    actor           String,
    change_time     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(change_time)
ORDER BY (organization_id, dedup_key);
