-- Credits of asynchronous jobs billed so far (Firecrawl crawls and batch scrapes). A job's
-- status responses report its credits cumulatively, and a client polls it many times, through
-- any gateway instance: each poll is billed only for the increase over the highest value billed
-- before. `previous` is the value the last increase started from, so that one upsert both
-- records the new value and answers the increase.
CREATE TABLE job_credits (
    user_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    job_id TEXT NOT NULL,
    billed BIGINT NOT NULL,
    previous BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, provider, job_id)
);
