-- The request id the gateway answered the call with (`x-request-id`: the client's own, or one
-- the gateway made), so that a client's report of one call finds its row. Rows written before
-- this column existed have none.
ALTER TABLE api_usage_logs ADD COLUMN request_id TEXT;
CREATE INDEX idx_usage_logs_request ON api_usage_logs (request_id);
