-- A key's own rules, which only ever narrow what its user's plan allows: until when it is valid
-- (NULL: no expiry), which providers it may call (a JSON array of provider ids; NULL: every
-- provider of the plan), and, per provider, which models (a JSON object of provider id to glob
-- patterns such as "gpt-4o*"; NULL: any model). Keys stored before this migration have none.
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
ALTER TABLE api_keys ADD COLUMN providers TEXT;
ALTER TABLE api_keys ADD COLUMN models TEXT;
