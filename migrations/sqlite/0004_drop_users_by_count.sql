-- tally ranks users in memory (src/counter/ranking.rs) and never queries
-- users by count, while every flush had to keep this index up to date: with
-- a million users it doubled the cost of upserting each clicking user.
DROP INDEX IF EXISTS users_by_count;
