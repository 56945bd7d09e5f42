-- Conversations: each one's click counter, and the chat messages. The same
-- meaning as migrations/sqlite/0005_conversations.sql.

-- One row per conversation that has been clicked in; ids are case-sensitive.
CREATE TABLE IF NOT EXISTS conversations (
    id         TEXT        PRIMARY KEY,
    clicks     BIGINT      NOT NULL DEFAULT 0 CHECK (clicks >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Chat messages. `id` is a UUIDv7 in lower-case text, so ordering by id is
-- ordering by time; `created_at` is milliseconds since the Unix epoch (UTC).
-- COLLATE "C" compares bytes, which is the order of the ids.
CREATE TABLE IF NOT EXISTS messages (
    id              TEXT COLLATE "C" PRIMARY KEY,
    conversation_id TEXT   NOT NULL,
    username        TEXT   NOT NULL,
    content         TEXT   NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id);
CREATE INDEX IF NOT EXISTS messages_by_age ON messages (created_at);
