-- tally's schema on PostgreSQL; the same meaning as migrations/sqlite/ and
-- migrations/mysql/.

-- One row per counter: `name` is "global" for the click total.
CREATE TABLE IF NOT EXISTS counters (
    name       TEXT        PRIMARY KEY,
    value      BIGINT      NOT NULL DEFAULT 0 CHECK (value >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Per-user click counts: the design's `users(id, username UNIQUE,
-- user_count)`. Names are unique regardless of case (they are ASCII, so
-- lower() is exact) and keep the spelling first written.
CREATE TABLE IF NOT EXISTS users (
    id         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username   TEXT        NOT NULL,
    user_count BIGINT      NOT NULL DEFAULT 0 CHECK (user_count >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS users_username_ci ON users (lower(username));

-- Applied flushes by (node, seq): a retried flush that already committed is
-- recognised and not counted twice.
CREATE TABLE IF NOT EXISTS flushes (
    node       BIGINT      NOT NULL,
    seq        BIGINT      NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (node, seq)
);
