-- Crash-safe ledger writes. A materialized view's insert is not atomic with the insert into
-- usage_events that feeds it, so a process killed between the two commits would leave the
-- rollups short for good. Every block of new events is therefore first journaled whole (one
-- atomic insert), then inserted with a deduplication token; a block left pending is inserted
-- again with the same token, which ClickHouse skips where it already landed (usage_events and
-- each rollup table keep their own log of tokens) and completes where it did not.
CREATE TABLE IF NOT EXISTS usage_write_journal
(
    token        String,
    state        UInt8,   -- 0: pending (payload holds the block), 1: done
    events       UInt32,
    payload      String CODEC(ZSTD(1)),
    written_time DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toStartOfFifteenMinutes(written_time)
ORDER BY (token, state);

ALTER TABLE usage_events MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE cost_corrections MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE usage_cost_1m MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE usage_rollup_1h MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE usage_rollup_1d MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE usage_rollup_1mo MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE usage_rollup_1mo_departments MODIFY SETTING non_replicated_deduplication_window = 10000;
