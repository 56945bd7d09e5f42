-- Conversations: each one's click counter, and the chat messages.

-- One row per conversation that has been clicked in. Ids are case-sensitive
-- (SQLite's default BINARY collation).
CREATE TABLE IF NOT EXISTS conversations (
    id         TEXT    PRIMARY KEY NOT NULL,
    clicks     INTEGER NOT NULL DEFAULT 0 CHECK (clicks >= 0),
    created_at TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- Chat messages. `id` is a UUIDv7 in lower-case text, so ordering by id is
-- ordering by time; `created_at` is milliseconds since the Unix epoch (UTC).
CREATE TABLE IF NOT EXISTS messages (
    id              TEXT    PRIMARY KEY NOT NULL,
    conversation_id TEXT    NOT NULL,
    username        TEXT    NOT NULL,
    content         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
);
-- "The last N of a conversation" and "newer than this id".
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id);
-- Retention deletes by age.
CREATE INDEX IF NOT EXISTS messages_by_age ON messages (created_at);
