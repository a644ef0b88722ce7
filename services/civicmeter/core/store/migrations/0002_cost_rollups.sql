-- Cost rollups maintained by materialized views on every insert into usage_events, so that
-- month-scale queries never scan raw events. Summing tables: readers still sum() and GROUP BY,
-- because background merges are not guaranteed to have run.
CREATE TABLE IF NOT EXISTS usage_cost_1m
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

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_cost_1m_mv TO usage_cost_1m AS
SELECT
    toStartOfMinute(event_time) AS window_start,
    organization_id, department_id, user_id, service_id,
    count() AS events,
    sum(toDecimal128(cost_krw, 6)) AS cost_krw
FROM usage_events
GROUP BY window_start, organization_id, department_id, user_id, service_id;

CREATE TABLE IF NOT EXISTS usage_cost_1h
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

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_cost_1h_mv TO usage_cost_1h AS
SELECT
    toStartOfHour(event_time) AS window_start,
    organization_id, department_id, user_id, service_id,
    count() AS events,
    sum(toDecimal128(cost_krw, 6)) AS cost_krw
FROM usage_events
GROUP BY window_start, organization_id, department_id, user_id, service_id;
