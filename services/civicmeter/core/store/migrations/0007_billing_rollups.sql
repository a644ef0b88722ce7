-- Billing rollups: cost and every quantity by hour (UTC), day and month (Asia/Seoul), over
-- every reporting dimension, so that month-scale queries read pre-aggregated rows only. They are
-- fed by materialized views from two sources: usage_events (first-seen rated events; the sink
-- never inserts an event twice) and cost_corrections (re-rating deltas, which change cost only).
-- Readers still sum() and GROUP BY: SummingMergeTree merges are not guaranteed to have run.

-- 1 when the event was rated later than its minute's end plus the allowed lateness: it is
-- billed in its own window like any other, and reported as a late correction.
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS late UInt8 DEFAULT 0;

-- Re-rating deltas: one row per event and re-rating run that changed its cost. An event's cost is
-- usage_events.cost_krw plus the sum of its deltas; to_price_version is its price version now.
CREATE TABLE IF NOT EXISTS cost_corrections
(
    organization_id    LowCardinality(String),
    department_id      LowCardinality(String),
    user_id            String,
    event_id           String,
    event_time         DateTime64(3, 'UTC'),
    service_id         LowCardinality(String),
    provider_name      LowCardinality(String),
    request_model      LowCardinality(String),
    operation_name     LowCardinality(String),
    purpose            LowCardinality(String),
    cost_delta_krw     Decimal(38, 6),
    from_price_version LowCardinality(String),
    to_price_version   LowCardinality(String),
    run_id             String,
    corrected_time     DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (organization_id, event_id, corrected_time);

-- UTC hours: exact for any time zone whose offset is whole hours.
CREATE TABLE IF NOT EXISTS usage_rollup_1h
(
    window_start                DateTime('UTC'),
    organization_id             LowCardinality(String),
    department_id               LowCardinality(String),
    user_id                     String,
    service_id                  LowCardinality(String),
    provider_name               LowCardinality(String),
    request_model               LowCardinality(String),
    operation_name              LowCardinality(String),
    purpose                     LowCardinality(String),
    events                      UInt64,
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
    cost_krw                    Decimal(38, 6),
    late_events                 UInt64,
    late_cost_krw               Decimal(38, 6)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (organization_id, window_start, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose);

-- Events stored before this migration.
INSERT INTO usage_rollup_1h
SELECT
    toStartOfHour(event_time) AS window_start,
    organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose,
    count() AS events,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_input_tokens) AS cache_read_input_tokens,
    sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(images) AS images,
    sum(audio_milliseconds) AS audio_milliseconds,
    sum(video_milliseconds) AS video_milliseconds,
    sum(characters) AS characters,
    sum(requests) AS requests,
    sum(seat_months) AS seat_months,
    sum(toDecimal128(cost_krw, 6)) AS cost_krw,
    countIf(late = 1) AS late_events,
    sumIf(toDecimal128(usage_events.cost_krw, 6), late = 1) AS late_cost_krw
FROM usage_events FINAL
GROUP BY window_start, organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_rollup_1h_mv TO usage_rollup_1h AS
SELECT
    toStartOfHour(event_time) AS window_start,
    organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose,
    count() AS events,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_input_tokens) AS cache_read_input_tokens,
    sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(images) AS images,
    sum(audio_milliseconds) AS audio_milliseconds,
    sum(video_milliseconds) AS video_milliseconds,
    sum(characters) AS characters,
    sum(requests) AS requests,
    sum(seat_months) AS seat_months,
    sum(toDecimal128(cost_krw, 6)) AS cost_krw,
    countIf(late = 1) AS late_events,
    sumIf(toDecimal128(usage_events.cost_krw, 6), late = 1) AS late_cost_krw
FROM usage_events
GROUP BY window_start, organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_rollup_1h_corrections_mv TO usage_rollup_1h AS
SELECT
    toStartOfHour(event_time) AS window_start,
    organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose,
    sum(cost_delta_krw) AS cost_krw
FROM cost_corrections
GROUP BY window_start, organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose;

-- Asia/Seoul days.
CREATE TABLE IF NOT EXISTS usage_rollup_1d
(
    window_start                Date,
    organization_id             LowCardinality(String),
    department_id               LowCardinality(String),
    user_id                     String,
    service_id                  LowCardinality(String),
    provider_name               LowCardinality(String),
    request_model               LowCardinality(String),
    operation_name              LowCardinality(String),
    purpose                     LowCardinality(String),
    events                      UInt64,
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
    cost_krw                    Decimal(38, 6),
    late_events                 UInt64,
    late_cost_krw               Decimal(38, 6)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (organization_id, window_start, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose);

-- Events stored before this migration.
INSERT INTO usage_rollup_1d
SELECT
    toDate(event_time, 'Asia/Seoul') AS window_start,
    organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose,
    count() AS events,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_input_tokens) AS cache_read_input_tokens,
    sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(images) AS images,
    sum(audio_milliseconds) AS audio_milliseconds,
    sum(video_milliseconds) AS video_milliseconds,
    sum(characters) AS characters,
    sum(requests) AS requests,
    sum(seat_months) AS seat_months,
    sum(toDecimal128(cost_krw, 6)) AS cost_krw,
    countIf(late = 1) AS late_events,
    sumIf(toDecimal128(usage_events.cost_krw, 6), late = 1) AS late_cost_krw
FROM usage_events FINAL
GROUP BY window_start, organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_rollup_1d_mv TO usage_rollup_1d AS
SELECT
    toDate(event_time, 'Asia/Seoul') AS window_start,
    organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose,
    count() AS events,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_input_tokens) AS cache_read_input_tokens,
    sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(images) AS images,
    sum(audio_milliseconds) AS audio_milliseconds,
    sum(video_milliseconds) AS video_milliseconds,
    sum(characters) AS characters,
    sum(requests) AS requests,
    sum(seat_months) AS seat_months,
    sum(toDecimal128(cost_krw, 6)) AS cost_krw,
    countIf(late = 1) AS late_events,
    sumIf(toDecimal128(usage_events.cost_krw, 6), late = 1) AS late_cost_krw
FROM usage_events
GROUP BY window_start, organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_rollup_1d_corrections_mv TO usage_rollup_1d AS
SELECT
    toDate(event_time, 'Asia/Seoul') AS window_start,
    organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose,
    sum(cost_delta_krw) AS cost_krw
FROM cost_corrections
GROUP BY window_start, organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose;

-- Asia/Seoul months.
CREATE TABLE IF NOT EXISTS usage_rollup_1mo
(
    window_start                Date,
    organization_id             LowCardinality(String),
    department_id               LowCardinality(String),
    user_id                     String,
    service_id                  LowCardinality(String),
    provider_name               LowCardinality(String),
    request_model               LowCardinality(String),
    operation_name              LowCardinality(String),
    purpose                     LowCardinality(String),
    events                      UInt64,
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
    cost_krw                    Decimal(38, 6),
    late_events                 UInt64,
    late_cost_krw               Decimal(38, 6)
)
ENGINE = SummingMergeTree
PARTITION BY toYear(window_start)
ORDER BY (organization_id, window_start, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose);

-- Events stored before this migration.
INSERT INTO usage_rollup_1mo
SELECT
    toStartOfMonth(toDate(event_time, 'Asia/Seoul')) AS window_start,
    organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose,
    count() AS events,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_input_tokens) AS cache_read_input_tokens,
    sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(images) AS images,
    sum(audio_milliseconds) AS audio_milliseconds,
    sum(video_milliseconds) AS video_milliseconds,
    sum(characters) AS characters,
    sum(requests) AS requests,
    sum(seat_months) AS seat_months,
    sum(toDecimal128(cost_krw, 6)) AS cost_krw,
    countIf(late = 1) AS late_events,
    sumIf(toDecimal128(usage_events.cost_krw, 6), late = 1) AS late_cost_krw
FROM usage_events FINAL
GROUP BY window_start, organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_rollup_1mo_mv TO usage_rollup_1mo AS
SELECT
    toStartOfMonth(toDate(event_time, 'Asia/Seoul')) AS window_start,
    organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose,
    count() AS events,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_input_tokens) AS cache_read_input_tokens,
    sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(images) AS images,
    sum(audio_milliseconds) AS audio_milliseconds,
    sum(video_milliseconds) AS video_milliseconds,
    sum(characters) AS characters,
    sum(requests) AS requests,
    sum(seat_months) AS seat_months,
    sum(toDecimal128(cost_krw, 6)) AS cost_krw,
    countIf(late = 1) AS late_events,
    sumIf(toDecimal128(usage_events.cost_krw, 6), late = 1) AS late_cost_krw
FROM usage_events
GROUP BY window_start, organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_rollup_1mo_corrections_mv TO usage_rollup_1mo AS
SELECT
    toStartOfMonth(toDate(event_time, 'Asia/Seoul')) AS window_start,
    organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose,
    sum(cost_delta_krw) AS cost_krw
FROM cost_corrections
GROUP BY window_start, organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose;

-- Asia/Seoul months without users: small however many users there are.
CREATE TABLE IF NOT EXISTS usage_rollup_1mo_departments
(
    window_start                Date,
    organization_id             LowCardinality(String),
    department_id               LowCardinality(String),
    service_id                  LowCardinality(String),
    provider_name               LowCardinality(String),
    request_model               LowCardinality(String),
    operation_name              LowCardinality(String),
    purpose                     LowCardinality(String),
    events                      UInt64,
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
    cost_krw                    Decimal(38, 6),
    late_events                 UInt64,
    late_cost_krw               Decimal(38, 6)
)
ENGINE = SummingMergeTree
PARTITION BY toYear(window_start)
ORDER BY (organization_id, window_start, department_id, service_id, provider_name, request_model, operation_name, purpose);

-- Events stored before this migration.
INSERT INTO usage_rollup_1mo_departments
SELECT
    toStartOfMonth(toDate(event_time, 'Asia/Seoul')) AS window_start,
    organization_id, department_id, service_id, provider_name, request_model, operation_name, purpose,
    count() AS events,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_input_tokens) AS cache_read_input_tokens,
    sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(images) AS images,
    sum(audio_milliseconds) AS audio_milliseconds,
    sum(video_milliseconds) AS video_milliseconds,
    sum(characters) AS characters,
    sum(requests) AS requests,
    sum(seat_months) AS seat_months,
    sum(toDecimal128(cost_krw, 6)) AS cost_krw,
    countIf(late = 1) AS late_events,
    sumIf(toDecimal128(usage_events.cost_krw, 6), late = 1) AS late_cost_krw
FROM usage_events FINAL
GROUP BY window_start, organization_id, department_id, service_id, provider_name, request_model, operation_name, purpose;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_rollup_1mo_departments_mv TO usage_rollup_1mo_departments AS
SELECT
    toStartOfMonth(toDate(event_time, 'Asia/Seoul')) AS window_start,
    organization_id, department_id, service_id, provider_name, request_model, operation_name, purpose,
    count() AS events,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_input_tokens) AS cache_read_input_tokens,
    sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(images) AS images,
    sum(audio_milliseconds) AS audio_milliseconds,
    sum(video_milliseconds) AS video_milliseconds,
    sum(characters) AS characters,
    sum(requests) AS requests,
    sum(seat_months) AS seat_months,
    sum(toDecimal128(cost_krw, 6)) AS cost_krw,
    countIf(late = 1) AS late_events,
    sumIf(toDecimal128(usage_events.cost_krw, 6), late = 1) AS late_cost_krw
FROM usage_events
GROUP BY window_start, organization_id, department_id, service_id, provider_name, request_model, operation_name, purpose;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_rollup_1mo_departments_corrections_mv TO usage_rollup_1mo_departments AS
SELECT
    toStartOfMonth(toDate(event_time, 'Asia/Seoul')) AS window_start,
    organization_id, department_id, service_id, provider_name, request_model, operation_name, purpose,
    sum(cost_delta_krw) AS cost_krw
FROM cost_corrections
GROUP BY window_start, organization_id, department_id, service_id, provider_name, request_model, operation_name, purpose;

-- The minute rollup takes the re-rating deltas too, so every rollup level reconciles.
CREATE MATERIALIZED VIEW IF NOT EXISTS usage_cost_1m_corrections_mv TO usage_cost_1m AS
SELECT
    toStartOfMinute(event_time) AS window_start,
    organization_id, department_id, user_id, service_id,
    sum(cost_delta_krw) AS cost_krw
FROM cost_corrections
GROUP BY window_start, organization_id, department_id, user_id, service_id;

-- Replaced by the billing rollups above.
DROP VIEW IF EXISTS usage_cost_1h_mv;
DROP VIEW IF EXISTS usage_cost_1d_mv;
DROP VIEW IF EXISTS usage_cost_1d_departments_mv;
DROP TABLE IF EXISTS usage_cost_1h;
DROP TABLE IF EXISTS usage_cost_1d;
DROP TABLE IF EXISTS usage_cost_1d_departments;
