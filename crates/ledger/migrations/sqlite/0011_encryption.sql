-- Which key the ledger was written with (docs/ledger.md, "Encryption at rest"), kept in step
-- with ../postgres/0011_encryption.sql. A SQLite ledger is encrypted as a whole file, which a
-- wrong key cannot open at all; the row is the same check PostgreSQL's columns rely on.
CREATE TABLE ledger_encryption (
    id         INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    key_check  TEXT NOT NULL,
    set_at     TEXT NOT NULL
);
