-- Tollgate ledger schema (PostgreSQL). Money is integer nano-USD (1e-9 USD) in BIGINT columns;
-- timestamps are UTC. Kept column-for-column in step with ../sqlite/0001_initial.sql.

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    display_name  TEXT,
    email         TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    disabled_at   TIMESTAMPTZ
);

-- Only a hash of each key is stored; `prefix` (e.g. "tg_ab12") lets an operator recognise a key.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    name         TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX idx_api_keys_user ON api_keys (user_id);

-- A mirror of the plans in gateway.toml (the config file is the source of truth), so that
-- billing_history and SQL reports can name a plan and its base price.
CREATE TABLE subscription_plans (
    id                     TEXT PRIMARY KEY NOT NULL,
    name                   TEXT NOT NULL UNIQUE,
    tier                   TEXT NOT NULL,
    price_monthly_nanousd  BIGINT NOT NULL DEFAULT 0,
    price_yearly_nanousd   BIGINT NOT NULL DEFAULT 0,
    limits_json            TEXT NOT NULL DEFAULT '{}',
    features_json          TEXT NOT NULL DEFAULT '[]',
    description            TEXT,
    is_active              BOOLEAN NOT NULL DEFAULT TRUE,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL
);

CREATE TABLE user_subscriptions (
    user_id        TEXT PRIMARY KEY NOT NULL,
    plan_id        TEXT NOT NULL,
    billing_cycle  TEXT NOT NULL DEFAULT 'monthly',
    anchor_day     BIGINT NOT NULL DEFAULT 1,
    status         TEXT NOT NULL DEFAULT 'active',
    auto_renew     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);

-- One row per metered call. `event_id` makes inserts idempotent: a replayed batch is a no-op.
-- No foreign keys: a usage event must never be refused because a user row is missing.
CREATE TABLE api_usage_logs (
    id                              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id                        TEXT NOT NULL UNIQUE,
    user_id                         TEXT NOT NULL,
    key_id                          TEXT,
    provider                        TEXT NOT NULL,
    model                           TEXT NOT NULL,
    endpoint                        TEXT NOT NULL,
    method                          TEXT NOT NULL,
    status_code                     BIGINT NOT NULL,
    input_tokens                    BIGINT NOT NULL DEFAULT 0,
    cached_input_tokens             BIGINT NOT NULL DEFAULT 0,
    cache_creation_input_tokens     BIGINT NOT NULL DEFAULT 0,
    cache_creation_1h_input_tokens  BIGINT NOT NULL DEFAULT 0,
    output_tokens                   BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens                BIGINT NOT NULL DEFAULT 0,
    total_tokens                    BIGINT NOT NULL DEFAULT 0,
    units                           BIGINT NOT NULL DEFAULT 0,
    reported_cost_nanousd           BIGINT,
    cost_input_nanousd              BIGINT NOT NULL DEFAULT 0,
    cost_output_nanousd             BIGINT NOT NULL DEFAULT 0,
    cost_other_nanousd              BIGINT NOT NULL DEFAULT 0,
    cost_total_nanousd              BIGINT NOT NULL DEFAULT 0,
    price_version                   TEXT NOT NULL,
    estimated                       BOOLEAN NOT NULL DEFAULT FALSE,
    latency_ms                      BIGINT NOT NULL DEFAULT 0,
    request_bytes                   BIGINT NOT NULL DEFAULT 0,
    response_bytes                  BIGINT NOT NULL DEFAULT 0,
    error_message                   TEXT,
    billing_period                  TEXT NOT NULL,
    occurred_at                     TIMESTAMPTZ NOT NULL,
    occurred_day                    TEXT NOT NULL,
    recorded_at                     TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_usage_logs_user_time ON api_usage_logs (user_id, occurred_at);
CREATE INDEX idx_usage_logs_user_period_day ON api_usage_logs (user_id, billing_period, occurred_day);
CREATE INDEX idx_usage_logs_key ON api_usage_logs (key_id);

-- Per (user, period) totals, maintained by atomic increments in the same transaction as the
-- log rows they count.
CREATE TABLE usage_summaries (
    user_id                         TEXT NOT NULL,
    billing_period                  TEXT NOT NULL,
    total_calls                     BIGINT NOT NULL DEFAULT 0,
    total_tokens                    BIGINT NOT NULL DEFAULT 0,
    input_tokens                    BIGINT NOT NULL DEFAULT 0,
    cached_input_tokens             BIGINT NOT NULL DEFAULT 0,
    cache_creation_input_tokens     BIGINT NOT NULL DEFAULT 0,
    output_tokens                   BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens                BIGINT NOT NULL DEFAULT 0,
    units                           BIGINT NOT NULL DEFAULT 0,
    total_cost_nanousd              BIGINT NOT NULL DEFAULT 0,
    error_calls                     BIGINT NOT NULL DEFAULT 0,
    estimated_calls                 BIGINT NOT NULL DEFAULT 0,
    latency_ms_sum                  BIGINT NOT NULL DEFAULT 0,
    created_at                      TIMESTAMPTZ NOT NULL,
    updated_at                      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, billing_period)
);
CREATE INDEX idx_usage_summaries_period ON usage_summaries (billing_period);

-- The per-provider breakdown of usage_summaries (the seed's gemini_calls, openai_cost, ... columns).
CREATE TABLE usage_summary_providers (
    user_id              TEXT NOT NULL,
    billing_period       TEXT NOT NULL,
    provider             TEXT NOT NULL,
    calls                BIGINT NOT NULL DEFAULT 0,
    tokens               BIGINT NOT NULL DEFAULT 0,
    input_tokens         BIGINT NOT NULL DEFAULT 0,
    output_tokens        BIGINT NOT NULL DEFAULT 0,
    units                BIGINT NOT NULL DEFAULT 0,
    cost_nanousd         BIGINT NOT NULL DEFAULT 0,
    error_calls          BIGINT NOT NULL DEFAULT 0,
    latency_ms_sum       BIGINT NOT NULL DEFAULT 0,
    updated_at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, billing_period, provider)
);
CREATE INDEX idx_usage_summary_providers_period ON usage_summary_providers (billing_period);

-- Published prices as they were applied, by version, so a bill can be explained later.
CREATE TABLE api_provider_pricing (
    provider        TEXT NOT NULL,
    model           TEXT NOT NULL,
    price_version   TEXT NOT NULL,
    price_json      TEXT NOT NULL,
    source          TEXT,
    effective_date  TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (provider, model, price_version)
);

-- One alert per (user, limit, threshold, period): inserting it twice is a no-op.
CREATE TABLE usage_alerts (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id               TEXT NOT NULL,
    billing_period        TEXT NOT NULL,
    limit_key             TEXT NOT NULL,
    threshold_percentage  BIGINT NOT NULL,
    alert_type            TEXT NOT NULL,
    provider              TEXT,
    title                 TEXT NOT NULL,
    message               TEXT NOT NULL,
    severity              TEXT NOT NULL,
    is_sent               BOOLEAN NOT NULL DEFAULT FALSE,
    sent_at               TIMESTAMPTZ,
    is_read               BOOLEAN NOT NULL DEFAULT FALSE,
    read_at               TIMESTAMPTZ,
    created_at            TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, limit_key, threshold_percentage, billing_period)
);
CREATE INDEX idx_usage_alerts_user_time ON usage_alerts (user_id, created_at);

-- One row per (user, period) once the period has ended, written exactly once.
CREATE TABLE billing_history (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id              TEXT NOT NULL,
    billing_period       TEXT NOT NULL,
    period_start         TIMESTAMPTZ NOT NULL,
    period_end           TIMESTAMPTZ NOT NULL,
    plan_id              TEXT,
    plan_name            TEXT,
    base_cost_nanousd    BIGINT NOT NULL DEFAULT 0,
    usage_cost_nanousd   BIGINT NOT NULL DEFAULT 0,
    overage_cost_nanousd BIGINT NOT NULL DEFAULT 0,
    total_cost_nanousd   BIGINT NOT NULL DEFAULT 0,
    total_calls          BIGINT NOT NULL DEFAULT 0,
    total_tokens         BIGINT NOT NULL DEFAULT 0,
    usage_details        TEXT NOT NULL DEFAULT '{}',
    payment_status       TEXT NOT NULL DEFAULT 'pending',
    created_at           TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, billing_period)
);
