-- PrismQ Queue schema, version 7: flow control.
--
-- tasks.concurrency_key: the key a task's concurrency and rate limits are counted by (a
-- tenant, an API host), given at enqueue. tasks.unique_key: the key of an enqueue made
-- unique by state (see prismq.queue.flow.Unique); several finished tasks may share one.
-- flow_limits: one row per limited scope, a task type ('' for every type) and a key (''
-- for every key). flow_starts: the claim times of tasks under a rate limit, kept for one
-- period; a claim counts them and adds its own, in its transaction.

ALTER TABLE tasks ADD COLUMN concurrency_key TEXT CHECK (concurrency_key IS NULL OR length(concurrency_key) BETWEEN 1 AND 200);
ALTER TABLE tasks ADD COLUMN unique_key TEXT;

CREATE INDEX idx_tasks_unique ON tasks (unique_key, created_at) WHERE unique_key IS NOT NULL;

CREATE TABLE flow_limits (
    task_type       TEXT    NOT NULL DEFAULT '',
    concurrency_key TEXT    NOT NULL DEFAULT '',
    max_leased      INTEGER CHECK (max_leased IS NULL OR max_leased >= 1),
    max_starts      INTEGER CHECK (max_starts IS NULL OR max_starts >= 1),
    period          REAL    CHECK (period IS NULL OR period > 0),
    CHECK ((max_starts IS NULL) = (period IS NULL)),
    CHECK (max_leased IS NOT NULL OR max_starts IS NOT NULL),
    CHECK (task_type <> '' OR concurrency_key <> ''),
    PRIMARY KEY (task_type, concurrency_key)
) WITHOUT ROWID;

CREATE TABLE flow_starts (
    task_type       TEXT NOT NULL,
    concurrency_key TEXT NOT NULL,
    started_at      REAL NOT NULL
);

CREATE INDEX idx_flow_starts ON flow_starts (task_type, concurrency_key, started_at);
