-- E-mail delivery of alerts, kept apart from webhook delivery (0002) so that a mail server that
-- is down neither holds back nor repeats webhooks, and the reverse. The same claim-with-a-lease
-- scheme: an instance claims an unmailed alert by moving email_lease_until_ms into the future;
-- a failed attempt sets it to the time of the next try. Alerts raised before this migration
-- count as mailed, so that turning e-mail on does not send a backlog of old alerts.
ALTER TABLE usage_alerts ADD COLUMN email_sent BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE usage_alerts ADD COLUMN email_sent_at TIMESTAMPTZ;
ALTER TABLE usage_alerts ADD COLUMN email_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_alerts ADD COLUMN email_lease_until_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_alerts ADD COLUMN email_claimed_by TEXT;
ALTER TABLE usage_alerts ADD COLUMN email_last_error TEXT;
UPDATE usage_alerts SET email_sent = TRUE;
CREATE INDEX idx_usage_alerts_unmailed ON usage_alerts (email_sent, email_lease_until_ms);
