-- The Seoul day and month views as the hour rollup's rows relabelled with their Seoul day or
-- month, without a GROUP BY of their own. Readers sum() and GROUP BY whatever they read (a
-- SummingMergeTree holds several rows per key until its merges run), so the answers are the
-- same; a view that grouped by every key first made a year's breakdown by user aggregate the
-- hours twice (1.5 s instead of 65 ms on three million hour rows).
CREATE OR REPLACE VIEW usage_rollup_1d AS
SELECT
    toDate(hour.window_start, 'Asia/Seoul') AS window_start,
    organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose,
    events, input_tokens, output_tokens, cache_read_input_tokens,
    cache_creation_input_tokens, reasoning_tokens, images, audio_milliseconds,
    video_milliseconds, characters, requests, seat_months,
    cost_krw, late_events, late_cost_krw
FROM usage_rollup_1h AS hour;

CREATE OR REPLACE VIEW usage_rollup_1mo AS
SELECT
    toStartOfMonth(toDate(hour.window_start, 'Asia/Seoul')) AS window_start,
    organization_id, department_id, user_id, service_id, provider_name, request_model, operation_name, purpose,
    events, input_tokens, output_tokens, cache_read_input_tokens,
    cache_creation_input_tokens, reasoning_tokens, images, audio_milliseconds,
    video_milliseconds, characters, requests, seat_months,
    cost_krw, late_events, late_cost_krw
FROM usage_rollup_1h AS hour;
