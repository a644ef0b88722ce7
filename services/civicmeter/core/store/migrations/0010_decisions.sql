-- The gateway guard's decision on each request and the policy rules that applied. Events of
-- gateways without a guard, and every event stored before, have an empty decision.
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS decision LowCardinality(String) DEFAULT '';
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS decision_rule_ids Array(LowCardinality(String));
ALTER TABLE usage_staged ADD COLUMN IF NOT EXISTS decision LowCardinality(String) DEFAULT '';
ALTER TABLE usage_staged ADD COLUMN IF NOT EXISTS decision_rule_ids Array(LowCardinality(String));
