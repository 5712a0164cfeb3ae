-- PrismQ Queue schema, version 4: paused task types, and indexes for listing failures.
--
-- paused_task_types holds the task types no worker may claim (QueueClient.pause). Claims
-- read it inside their write transaction, so a pause is seen by every claim that starts
-- after it commits, in every process. Tasks of a paused type keep being enqueued.
--
-- Dead and cancelled tasks get a small partial index each, newest finished first: the
-- dashboard lists them a page at a time without reading the (usually far more numerous)
-- completed rows. Only a task that dies, is cancelled, or is retried or pruned from those
-- states writes to them: claims and completions do not.

CREATE TABLE paused_task_types (
    task_type TEXT PRIMARY KEY CHECK (length(task_type) BETWEEN 1 AND 200),
    paused_at REAL NOT NULL
) WITHOUT ROWID;

CREATE INDEX idx_tasks_dead      ON tasks (finished_at, id) WHERE status = 'dead';
CREATE INDEX idx_tasks_cancelled ON tasks (finished_at, id) WHERE status = 'cancelled';
