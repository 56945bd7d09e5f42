-- One row per counter. `name` is "global" for the click total; rooms and
-- users get their own rows or tables in later migrations.
CREATE TABLE IF NOT EXISTS counters (
    name       TEXT    PRIMARY KEY NOT NULL,
    value      INTEGER NOT NULL DEFAULT 0 CHECK (value >= 0),
    updated_at TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);
