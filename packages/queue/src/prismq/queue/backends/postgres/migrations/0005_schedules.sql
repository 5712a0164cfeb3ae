-- PrismQ Queue schema for PostgreSQL, version 5: periodic schedules
-- (prismq.queue.schedules). Same columns and meaning as the SQLite table. next_run is the
-- next tick not yet enqueued (UTC epoch seconds); a scheduler advances it in the same
-- transaction that inserts the tick's task, whose idempotency key
-- 'prismq.schedule:<name>@<tick>' is unique, so a tick is enqueued once however many
-- workers run the scheduler.

CREATE TABLE schedules (
    name         text    PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    cron         text    NOT NULL CHECK (length(cron) BETWEEN 1 AND 200),
    timezone     text    NOT NULL DEFAULT 'UTC',
    task_type    text    NOT NULL CHECK (length(task_type) BETWEEN 1 AND 200),
    payload      text    NOT NULL DEFAULT 'null' CHECK (payload::json IS NOT NULL),
    priority     integer NOT NULL DEFAULT 100 CHECK (priority BETWEEN 0 AND 1000),
    max_attempts integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 1000),
    misfire      text    NOT NULL DEFAULT 'run_once'
                         CHECK (misfire IN ('skip', 'run_once', 'backfill')),
    max_backfill integer NOT NULL DEFAULT 10 CHECK (max_backfill BETWEEN 1 AND 1000),
    grace        double precision NOT NULL DEFAULT 60 CHECK (grace > 0),
    source       text    NOT NULL DEFAULT 'api' CHECK (source IN ('code', 'config', 'api')),
    paused       boolean NOT NULL DEFAULT false,
    next_run     double precision NOT NULL,
    last_run     double precision,
    last_task_id bigint,
    created_at   double precision NOT NULL,
    updated_at   double precision NOT NULL
);

-- Schedules due next, for the scheduler's "what is due" read.
CREATE INDEX idx_schedules_due ON schedules (next_run) WHERE NOT paused;
