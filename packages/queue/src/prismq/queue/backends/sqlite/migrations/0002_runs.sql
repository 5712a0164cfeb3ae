-- PrismQ Queue schema, version 2: the run registry of prismq.queue.integrations.
-- Every run is also a task (task_type 'prismq.run:<module_id>'); this table holds what a
-- run has beyond the task columns. Deleting the task (prune, cleanup) deletes the run.

CREATE TABLE runs (
    run_id           TEXT    PRIMARY KEY CHECK (length(run_id) BETWEEN 1 AND 200),
    task_id          INTEGER NOT NULL UNIQUE REFERENCES tasks (id) ON DELETE CASCADE,
    module_id        TEXT    NOT NULL CHECK (length(module_id) BETWEEN 1 AND 180),
    module_name      TEXT    NOT NULL,
    status           TEXT    NOT NULL
                             CHECK (status IN ('queued', 'running', 'completed', 'failed',
                                               'cancelled', 'interrupted')),
    parameters       TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(parameters)),
    rerunnable       INTEGER NOT NULL DEFAULT 0 CHECK (rerunnable IN (0, 1)),
    progress_percent REAL    NOT NULL DEFAULT 0 CHECK (progress_percent BETWEEN 0 AND 100),
    progress_message TEXT,
    items_processed  INTEGER CHECK (items_processed IS NULL OR items_processed >= 0),
    items_total      INTEGER CHECK (items_total IS NULL OR items_total >= 0),
    exit_code        INTEGER,
    error_message    TEXT,
    owner            TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at       REAL    NOT NULL,
    started_at       REAL,
    completed_at     REAL,
    updated_at       REAL    NOT NULL
);

CREATE INDEX idx_runs_created ON runs (created_at);
CREATE INDEX idx_runs_status  ON runs (status, created_at);
CREATE INDEX idx_runs_module  ON runs (module_id, created_at);
-- Active runs by owning manager, for lease renewal.
CREATE INDEX idx_runs_owner   ON runs (owner) WHERE status IN ('queued', 'running');
