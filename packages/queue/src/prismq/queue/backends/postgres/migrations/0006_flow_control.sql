-- PrismQ Queue schema for PostgreSQL, version 6: flow control. Same columns and meaning
-- as the SQLite migration (sqlite/migrations/0007_flow_control.sql). A claim locks the
-- flow_limits rows that apply to it (FOR UPDATE) before it counts, so claims under one
-- limit take turns and a limit holds across every process.

ALTER TABLE tasks ADD COLUMN concurrency_key text
    CHECK (concurrency_key IS NULL OR length(concurrency_key) BETWEEN 1 AND 200);
ALTER TABLE tasks ADD COLUMN unique_key text;

CREATE INDEX idx_tasks_unique ON tasks (unique_key, created_at) WHERE unique_key IS NOT NULL;

CREATE TABLE flow_limits (
    task_type       text    NOT NULL DEFAULT '',
    concurrency_key text    NOT NULL DEFAULT '',
    max_leased      integer CHECK (max_leased IS NULL OR max_leased >= 1),
    max_starts      integer CHECK (max_starts IS NULL OR max_starts >= 1),
    period          double precision CHECK (period IS NULL OR period > 0),
    CHECK ((max_starts IS NULL) = (period IS NULL)),
    CHECK (max_leased IS NOT NULL OR max_starts IS NOT NULL),
    CHECK (task_type <> '' OR concurrency_key <> ''),
    PRIMARY KEY (task_type, concurrency_key)
);

CREATE TABLE flow_starts (
    task_type       text             NOT NULL,
    concurrency_key text             NOT NULL,
    started_at      double precision NOT NULL
);

CREATE INDEX idx_flow_starts ON flow_starts (task_type, concurrency_key, started_at);
