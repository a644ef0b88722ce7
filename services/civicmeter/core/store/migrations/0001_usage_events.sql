-- Rated usage events, one row per event_id. ReplacingMergeTree folds any duplicate that slips
-- past the sink's check; queries that must be exact read the rollups, which only ever see
-- events the sink has not stored before.
CREATE TABLE IF NOT EXISTS usage_events
(
    organization_id             LowCardinality(String),
    department_id               LowCardinality(String),
    user_id                     String,
    event_id                    String,
    event_time                  DateTime64(3, 'UTC'),
    gateway_id                  LowCardinality(String),
    account_kind                LowCardinality(String),
    provider_name               LowCardinality(String),
    service_id                  LowCardinality(String),
    request_model               LowCardinality(String),
    operation_name              LowCardinality(String),
    purpose                     LowCardinality(String),
    input_tokens                UInt64,
    output_tokens               UInt64,
    cache_read_input_tokens     UInt64,
    cache_creation_input_tokens UInt64,
    reasoning_tokens            UInt64,
    images                      UInt64,
    audio_milliseconds          UInt64,
    video_milliseconds          UInt64,
    characters                  UInt64,
    requests                    UInt64,
    seat_months                 UInt64,
    pii_findings                Map(LowCardinality(String), UInt32),
    content_category            LowCardinality(String),
    cost_krw                    Decimal(18, 6),
    price_version               LowCardinality(String),
    rated_time                  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (organization_id, toDate(event_time), event_id);
