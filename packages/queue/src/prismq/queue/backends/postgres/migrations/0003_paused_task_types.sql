-- PrismQ Queue schema for PostgreSQL, version 3: paused task types (QueueClient.pause).
-- A claim reads this table inside its transaction and leaves the paused types' tasks
-- queued; tasks of a paused type keep being enqueued. Same meaning as on SQLite, where
-- this step also adds two indexes for listing failures (idx_tasks_finished, keyed by
-- status first, already serves that here).

CREATE TABLE paused_task_types (
    task_type text PRIMARY KEY CHECK (length(task_type) BETWEEN 1 AND 200),
    paused_at double precision NOT NULL
);
