-- A key's own limits, checked together with its user's plan: budgets per billing period (cost in
-- nano-USD, tokens) and per-minute rates (calls, tokens). NULL: no such limit of the key's own.
ALTER TABLE api_keys ADD COLUMN budget_nanousd BIGINT;
ALTER TABLE api_keys ADD COLUMN budget_tokens BIGINT;
ALTER TABLE api_keys ADD COLUMN calls_per_minute BIGINT;
ALTER TABLE api_keys ADD COLUMN tokens_per_minute BIGINT;
