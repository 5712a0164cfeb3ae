-- PrismQ Queue schema for PostgreSQL, version 2: the run registry of
-- prismq.queue.integrations. Same columns and meaning as the SQLite table. Every run is
-- also a task (task_type 'prismq.run:<module_id>'); this table holds what a run has beyond
-- the task columns. Deleting the task (prune, cleanup) deletes the run.

CREATE TABLE runs (
    run_id           text    PRIMARY KEY CHECK (length(run_id) BETWEEN 1 AND 200),
    task_id          bigint  NOT NULL UNIQUE REFERENCES tasks (id) ON DELETE CASCADE,
    module_id        text    NOT NULL CHECK (length(module_id) BETWEEN 1 AND 180),
    module_name      text    NOT NULL,
    status           text    NOT NULL
                             CHECK (status IN ('queued', 'running', 'completed', 'failed',
                                               'cancelled', 'interrupted')),
    parameters       text    NOT NULL DEFAULT '{}' CHECK (parameters::json IS NOT NULL),
    rerunnable       boolean NOT NULL DEFAULT false,
    progress_percent double precision NOT NULL DEFAULT 0
                             CHECK (progress_percent BETWEEN 0 AND 100),
    progress_message text,
    items_processed  bigint  CHECK (items_processed IS NULL OR items_processed >= 0),
    items_total      bigint  CHECK (items_total IS NULL OR items_total >= 0),
    exit_code        bigint,
    error_message    text,
    owner            text,
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at       double precision NOT NULL,
    started_at       double precision,
    completed_at     double precision,
    updated_at       double precision NOT NULL
);

CREATE INDEX idx_runs_created ON runs (created_at);
CREATE INDEX idx_runs_status  ON runs (status, created_at);
CREATE INDEX idx_runs_module  ON runs (module_id, created_at);
-- Active runs by owning manager, for lease renewal.
CREATE INDEX idx_runs_owner   ON runs (owner) WHERE status IN ('queued', 'running');
