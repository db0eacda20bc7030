-- Delivery of alerts to webhooks by any number of gateway instances. An instance claims an
-- unsent alert by moving its lease into the future in one UPDATE; only the claimant delivers
-- it, and a failed attempt sets the lease to the time of the next try (exponential back-off).
-- Lease times are Unix milliseconds so that both databases compare them as integers.
ALTER TABLE usage_alerts ADD COLUMN delivery_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_alerts ADD COLUMN delivery_lease_until_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_alerts ADD COLUMN delivery_claimed_by TEXT;
ALTER TABLE usage_alerts ADD COLUMN delivery_last_error TEXT;
CREATE INDEX idx_usage_alerts_unsent ON usage_alerts (is_sent, delivery_lease_until_ms);
