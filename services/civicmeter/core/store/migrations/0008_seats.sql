-- Seats: per-user subscriptions of an AI service, from the seat file (CIVICMETER_SEATS_FILE).
--
-- seat_assignments holds the seat file as last loaded, one row per (organisation, seat).
-- The billing service's seat ledger writes a new version of a seat when the file changes it,
-- and a tombstone (deleted = 1) when the file no longer lists it, so a removed seat disappears
-- from every reader of `seat_assignments FINAL WHERE deleted = 0` (ReplacingMergeTree keeps the
-- row with the highest updated_time, and FINAL drops it when that row is a tombstone).
CREATE TABLE IF NOT EXISTS seat_assignments
(
    organization_id LowCardinality(String),
    seat_id         String,
    department_id   LowCardinality(String),
    user_id         String,
    provider_name   LowCardinality(String),
    service_id      LowCardinality(String),
    plan            LowCardinality(String),
    start_date      Date,
    -- NULL: open-ended. Inclusive: the seat is held on its end date.
    end_date        Nullable(Date),
    updated_time    DateTime64(6, 'UTC'),
    deleted         UInt8
)
ENGINE = ReplacingMergeTree(updated_time, deleted)
ORDER BY (organization_id, seat_id);

-- The monthly seat charges the ledger has written to usage_events (event_id
-- seat:{seat_id}:{YYYY-MM}), one row per seat and Asia/Seoul month: how the ledger knows what it
-- has charged, whatever later edits to the seat, and each seat's fee for a month. A charge is
-- written to usage_events first and recorded here after, so a crash in between only makes the
-- next round write it again, which the event writer recognises as stored.
CREATE TABLE IF NOT EXISTS seat_charges
(
    organization_id LowCardinality(String),
    seat_id         String,
    month           Date,
    event_id        String,
    event_time      DateTime64(3, 'UTC'),
    department_id   LowCardinality(String),
    user_id         String,
    provider_name   LowCardinality(String),
    service_id      LowCardinality(String),
    plan            LowCardinality(String),
    cost_krw        Decimal(18, 6),
    price_version   LowCardinality(String),
    charged_time    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (organization_id, seat_id, month);
