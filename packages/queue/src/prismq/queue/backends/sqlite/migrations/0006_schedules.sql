-- PrismQ Queue schema, version 6: periodic schedules (prismq.queue.schedules).
-- One row per schedule. next_run is the next tick not yet enqueued (UTC epoch seconds);
-- a scheduler advances it in the same transaction that inserts the tick's task, whose
-- idempotency key 'prismq.schedule:<name>@<tick>' is unique, so a tick is enqueued once
-- however many workers run the scheduler.

CREATE TABLE schedules (
    name         TEXT    PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    cron         TEXT    NOT NULL CHECK (length(cron) BETWEEN 1 AND 200),
    timezone     TEXT    NOT NULL DEFAULT 'UTC',
    task_type    TEXT    NOT NULL CHECK (length(task_type) BETWEEN 1 AND 200),
    payload      TEXT    NOT NULL DEFAULT 'null' CHECK (json_valid(payload)),
    priority     INTEGER NOT NULL DEFAULT 100 CHECK (priority BETWEEN 0 AND 1000),
    max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 1000),
    misfire      TEXT    NOT NULL DEFAULT 'run_once'
                         CHECK (misfire IN ('skip', 'run_once', 'backfill')),
    max_backfill INTEGER NOT NULL DEFAULT 10 CHECK (max_backfill BETWEEN 1 AND 1000),
    grace        REAL    NOT NULL DEFAULT 60 CHECK (grace > 0),
    source       TEXT    NOT NULL DEFAULT 'api' CHECK (source IN ('code', 'config', 'api')),
    paused       INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    next_run     REAL    NOT NULL,
    last_run     REAL,
    last_task_id INTEGER,
    created_at   REAL    NOT NULL,
    updated_at   REAL    NOT NULL
) WITHOUT ROWID;

-- Schedules due next, for the scheduler's "what is due" read.
CREATE INDEX idx_schedules_due ON schedules (next_run) WHERE paused = 0;
