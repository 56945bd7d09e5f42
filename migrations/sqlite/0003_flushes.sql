-- Every flush records its (node, seq) in the same transaction as its deltas,
-- so a retried flush whose first attempt did commit (its answer was lost) is
-- recognised and not counted twice. Rows are pruned as soon as the node that
-- wrote them can no longer retry them.
CREATE TABLE IF NOT EXISTS flushes (
    node       INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    applied_at TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (node, seq)
);
