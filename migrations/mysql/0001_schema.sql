-- tally's schema on MySQL 8 and MariaDB 10.6+; the same meaning as
-- migrations/sqlite/ and migrations/postgres/.

-- One row per counter: `name` is "global" for the click total.
CREATE TABLE IF NOT EXISTS counters (
    name       VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    value      BIGINT       NOT NULL DEFAULT 0,
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    CONSTRAINT counters_value_not_negative CHECK (value >= 0)
) ENGINE = InnoDB;

-- Per-user click counts: the design's `users(id, username UNIQUE,
-- user_count)`. The case-insensitive ASCII collation makes the unique key
-- ignore case; ON DUPLICATE KEY UPDATE keeps the spelling first written.
CREATE TABLE IF NOT EXISTS users (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username   VARCHAR(32)  CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
    user_count BIGINT       NOT NULL DEFAULT 0,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY users_username_ci (username),
    CONSTRAINT users_count_not_negative CHECK (user_count >= 0)
) ENGINE = InnoDB;

-- Applied flushes by (node, seq): a retried flush that already committed is
-- recognised and not counted twice.
CREATE TABLE IF NOT EXISTS flushes (
    node       BIGINT       NOT NULL,
    seq        BIGINT       NOT NULL,
    applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (node, seq)
) ENGINE = InnoDB;
