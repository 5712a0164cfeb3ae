-- PrismQ Queue schema, version 1.
-- Times are UTC epoch seconds (REAL). Payloads, results and retry policies are JSON text.
-- Ids are rowids (no AUTOINCREMENT, which costs a page write per insert); prune never
-- deletes the newest task, so an id is never handed out twice.

CREATE TABLE tasks (
    id               INTEGER PRIMARY KEY,
    task_type        TEXT    NOT NULL CHECK (length(task_type) BETWEEN 1 AND 200),
    payload          TEXT    NOT NULL CHECK (json_valid(payload)),
    status           TEXT    NOT NULL DEFAULT 'queued'
                             CHECK (status IN ('queued', 'leased', 'completed', 'dead', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 100 CHECK (priority BETWEEN 0 AND 1000),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    retry_policy     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(retry_policy)),
    run_after        REAL    NOT NULL,
    lease_until      REAL,
    locked_by        TEXT,
    lease_token      TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    progress         REAL    CHECK (progress IS NULL OR progress BETWEEN 0 AND 100),
    progress_message TEXT,
    result           TEXT    CHECK (result IS NULL OR json_valid(result)),
    last_error       TEXT,
    last_traceback   TEXT,
    idempotency_key  TEXT,
    created_at       REAL    NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    updated_at       REAL    NOT NULL,
    CHECK ((status = 'leased') = (lease_token IS NOT NULL))
);

-- Ready tasks, one index per claim order, per task type; partial, so they hold only queued
-- rows. A claim over every type walks the queued types and merges their heads. Two indexes
-- (not four) keep the pages written per enqueue and claim low.
CREATE INDEX idx_tasks_ready_type          ON tasks (task_type, run_after)           WHERE status = 'queued';
CREATE INDEX idx_tasks_ready_type_priority ON tasks (task_type, priority, run_after) WHERE status = 'queued';
-- Leases, for reclaiming the expired ones.
CREATE INDEX idx_tasks_leased              ON tasks (lease_until)                    WHERE status = 'leased';
-- Finished tasks, for prune and throughput.
CREATE INDEX idx_tasks_finished            ON tasks (status, finished_at)            WHERE finished_at IS NOT NULL;
-- Idempotency keys are unique while the task exists.
CREATE UNIQUE INDEX uq_tasks_idempotency   ON tasks (idempotency_key)                WHERE idempotency_key IS NOT NULL;

CREATE TABLE workers (
    worker_id      TEXT PRIMARY KEY,
    hostname       TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    task_types     TEXT CHECK (task_types IS NULL OR json_valid(task_types)),
    strategy       TEXT NOT NULL,
    started_at     REAL NOT NULL,
    last_heartbeat REAL NOT NULL
) WITHOUT ROWID;
