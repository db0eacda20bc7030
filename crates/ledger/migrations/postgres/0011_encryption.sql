-- Which key the ledger's encrypted data was written with (docs/ledger.md, "Encryption at
-- rest"): a check value derived from the key, never the key. No row: nothing is encrypted, and
-- the first start with a key encrypts users.display_name and users.email and writes the row;
-- a start with another key, or without one, is refused while the row says otherwise.
CREATE TABLE ledger_encryption (
    id         INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    key_check  TEXT NOT NULL,
    set_at     TIMESTAMPTZ NOT NULL
);
