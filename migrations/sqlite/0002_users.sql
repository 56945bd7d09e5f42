-- Per-user click counts. Usernames are unique regardless of case (NOCASE is
-- enough: usernames are ASCII) and keep the spelling first written.
CREATE TABLE IF NOT EXISTS users (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    username   TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    user_count INTEGER NOT NULL DEFAULT 0 CHECK (user_count >= 0),
    created_at TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS users_by_count ON users (user_count DESC, username);
