-- Calls the gateway refused after it knew the caller (a provider outside the plan, a limit
-- reached, an unpriced model, the counter store away, ...) are logged too, with zero usage and
-- cost and the refusal's code (the `tollgate.code` of the answer's body). Such rows count in no
-- summary, limit, error rate or total; rows written before this column existed are all calls
-- the gateway admitted.
ALTER TABLE api_usage_logs ADD COLUMN refusal_reason TEXT;
-- A user's refusals in a period, counted by reason for the usage answers.
CREATE INDEX idx_usage_logs_refused ON api_usage_logs (user_id, billing_period, refusal_reason)
    WHERE refusal_reason IS NOT NULL;
