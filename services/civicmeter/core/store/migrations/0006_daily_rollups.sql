-- Daily rollups (UTC days) for long ranges: one with users, and one without them, which stays
-- small however many users there are (organisation, department and service breakdowns).
CREATE TABLE IF NOT EXISTS usage_cost_1d
(
    window_start    DateTime('UTC'),
    organization_id LowCardinality(String),
    department_id   LowCardinality(String),
    user_id         String,
    service_id      LowCardinality(String),
    events          UInt64,
    cost_krw        Decimal(38, 6)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (organization_id, window_start, department_id, user_id, service_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_cost_1d_mv TO usage_cost_1d AS
SELECT
    toStartOfDay(event_time) AS window_start,
    organization_id, department_id, user_id, service_id,
    count() AS events,
    sum(toDecimal128(cost_krw, 6)) AS cost_krw
FROM usage_events
GROUP BY window_start, organization_id, department_id, user_id, service_id;

CREATE TABLE IF NOT EXISTS usage_cost_1d_departments
(
    window_start    DateTime('UTC'),
    organization_id LowCardinality(String),
    department_id   LowCardinality(String),
    service_id      LowCardinality(String),
    events          UInt64,
    cost_krw        Decimal(38, 6)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (organization_id, window_start, department_id, service_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_cost_1d_departments_mv
TO usage_cost_1d_departments AS
SELECT
    toStartOfDay(event_time) AS window_start,
    organization_id, department_id, service_id,
    count() AS events,
    sum(toDecimal128(cost_krw, 6)) AS cost_krw
FROM usage_events
GROUP BY window_start, organization_id, department_id, service_id;
