-- Erasures of users (the GDPR right to erasure): one row each, naming who erased (an admin
-- token's fingerprint, or "cli") and when, but not the user. `user_ref` is the hex SHA-256 of
-- the per-install salt below followed by the user id: it cannot be turned back into the id,
-- and yet the writer can tell that an event in flight or spooled at the moment of the erase
-- belongs to an erased user, and drop it instead of recreating their rows.
CREATE TABLE user_erasures (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_ref      TEXT NOT NULL,
    erased_by     TEXT NOT NULL,
    erased_at     TEXT NOT NULL,
    rows_deleted  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX idx_user_erasures_ref ON user_erasures (user_ref);

-- The salt of `user_erasures.user_ref`, made once per database.
CREATE TABLE erasure_salt (
    id    BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    salt  TEXT NOT NULL
);
INSERT INTO erasure_salt (id, salt) VALUES (1, lower(hex(randomblob(32))));
