-- Crash-safe ledger writes. A materialized view's insert is not atomic with the insert into
-- usage_events that feeds it, so a process killed between the two commits would leave the
-- rollups short for good. Every block of rated events is therefore first staged whole (one
-- atomic insert, ClickHouse parsing the protobuf records itself) and journaled, then copied
-- into usage_events with a deduplication token; a block whose copy was cut off is copied
-- again with the same token, which ClickHouse skips where it already landed (usage_events and
-- each rollup table keep their own log of tokens) and completes where it did not.
CREATE TABLE IF NOT EXISTS usage_staged
(
    write_token                 UInt64,
    staged_time                 DateTime64(3, 'UTC') DEFAULT now64(3),
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
    rated_time                  DateTime64(3, 'UTC'),
    late                        UInt8
)
ENGINE = MergeTree
PARTITION BY toStartOfFifteenMinutes(staged_time)
ORDER BY write_token;

-- One row when a block is staged (state 0) and one when it is copied (state 1).
CREATE TABLE IF NOT EXISTS usage_write_journal
(
    write_token  UInt64,
    state        UInt8,
    events       UInt32,
    written_time DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toStartOfFifteenMinutes(written_time)
ORDER BY (write_token, state);

-- Which block wrote each event: a block copied again keeps the events it wrote the first time.
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS write_token UInt64 DEFAULT 0;

ALTER TABLE usage_events MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE usage_cost_1m MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE usage_rollup_1h MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE usage_rollup_1d MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE usage_rollup_1mo MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE usage_rollup_1mo_departments MODIFY SETTING non_replicated_deduplication_window = 10000;
