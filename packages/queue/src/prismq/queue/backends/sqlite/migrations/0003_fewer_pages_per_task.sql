-- PrismQ Queue schema, version 3: fewer pages and less work per task.
--
-- With one task per transaction, a rate follows the index pages each commit writes and
-- the work each statement does. Version 3 changes two things and keeps every guarantee:
--
-- 1. Leased and finished tasks share one index instead of two, keyed first by "is
--    leased": finished rows (0, finished_at) sort just before leased rows
--    (1, lease_until). Leased rows are few (the tasks in flight), so a completion, which
--    leaves the leased part and enters the finished part at its newest end, and a
--    claim, which enters the leased part at its far end, change the same last page. A
--    completion writes two pages (row and index) instead of three. Queries spell both
--    key expressions and "status <> 'queued'" exactly, so that SQLite uses the index.
-- 2. The status CHECK is written with OR instead of IN: SQLite builds a lookup table
--    for an IN list each time a statement checks it, which cost about 2 microseconds on
--    every insert and every status change. The allowed values are the same.
--
-- SQLite cannot change a CHECK in place, so the table is rebuilt (create, copy, drop,
-- rename), with foreign keys off for the migration so the runs rows stay.

CREATE TABLE tasks_v3 (
    id               INTEGER PRIMARY KEY,
    task_type        TEXT    NOT NULL CHECK (length(task_type) BETWEEN 1 AND 200),
    payload          TEXT    NOT NULL CHECK (json_valid(payload)),
    status           TEXT    NOT NULL DEFAULT 'queued'
                             CHECK (status = 'queued' OR status = 'leased' OR status = 'completed'
                                    OR status = 'dead' OR status = 'cancelled'),
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

INSERT INTO tasks_v3 (
    id, task_type, payload, status, priority, attempts, max_attempts, retry_policy,
    run_after, lease_until, locked_by, lease_token, cancel_requested, progress,
    progress_message, result, last_error, last_traceback, idempotency_key, created_at,
    started_at, finished_at, updated_at
)
SELECT
    id, task_type, payload, status, priority, attempts, max_attempts, retry_policy,
    run_after, lease_until, locked_by, lease_token, cancel_requested, progress,
    progress_message, result, last_error, last_traceback, idempotency_key, created_at,
    started_at, finished_at, updated_at
FROM tasks;

DROP TABLE tasks;

ALTER TABLE tasks_v3 RENAME TO tasks;

CREATE INDEX idx_tasks_ready_type          ON tasks (task_type, run_after)           WHERE status = 'queued';
CREATE INDEX idx_tasks_ready_type_priority ON tasks (task_type, priority, run_after) WHERE status = 'queued';
CREATE INDEX idx_tasks_leased_finished     ON tasks (status = 'leased', coalesce(lease_until, finished_at))
    WHERE status <> 'queued';
CREATE UNIQUE INDEX uq_tasks_idempotency   ON tasks (idempotency_key)                WHERE idempotency_key IS NOT NULL;
