-- Where each notifier left off in alerts_opened; the latest row per name wins.
CREATE TABLE IF NOT EXISTS notifier_cursor
(
    name         String,
    opened_ms    Int64,
    dedup_key    String,
    updated_time DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_time)
ORDER BY name;

-- Every delivery attempt's outcome, so no alert is dropped silently. The target is the name
-- of the route, never the webhook URL (a secret).
CREATE TABLE IF NOT EXISTS alert_deliveries
(
    organization_id LowCardinality(String),
    dedup_key       String,
    target          String,
    severity        UInt8,
    status          LowCardinality(String),
    attempts        UInt8,
    reason          String,
    delivered_time  DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(delivered_time)
ORDER BY (organization_id, dedup_key, delivered_time);
