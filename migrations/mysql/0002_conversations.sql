-- Conversations: each one's click counter, and the chat messages. The same
-- meaning as migrations/sqlite/0005_conversations.sql.

-- One row per conversation that has been clicked in; ascii_bin keeps ids
-- case-sensitive.
CREATE TABLE IF NOT EXISTS conversations (
    id         VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    clicks     BIGINT       NOT NULL DEFAULT 0,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    CONSTRAINT conversations_clicks_not_negative CHECK (clicks >= 0)
) ENGINE = InnoDB;

-- Chat messages. `id` is a UUIDv7 in lower-case text, so ordering by id is
-- ordering by time; `created_at` is milliseconds since the Unix epoch (UTC).
-- Content is utf8mb4, so every Unicode character (emoji included) is kept.
CREATE TABLE IF NOT EXISTS messages (
    id              CHAR(36)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    conversation_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    username        VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    content         TEXT        CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    created_at      BIGINT      NOT NULL,
    KEY messages_by_conversation (conversation_id, id),
    KEY messages_by_age (created_at)
) ENGINE = InnoDB;
