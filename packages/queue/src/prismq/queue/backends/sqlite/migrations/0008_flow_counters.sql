-- PrismQ Queue schema, version 8: flow-control counters.
--
-- flow_limits.leased: the tasks of the limit's scope leased now, kept by triggers on tasks
-- while any limit exists (created with the first limit and dropped with the last, see
-- the flow_trigger queries), so a claim reads its room instead of counting tasks.
-- flow_starts: the claims under a rate limit, counted per bucket of period / 20 seconds
-- (prismq.queue.flow.RATE_BUCKETS): one row per scope and bucket instead of one per claim.
-- The claims recorded so far are carried over into their buckets.

ALTER TABLE flow_limits ADD COLUMN leased INTEGER NOT NULL DEFAULT 0;

UPDATE flow_limits SET leased = (
    SELECT count(*) FROM tasks t
    WHERE t.status = 'leased'
      AND (flow_limits.task_type = '' OR t.task_type = flow_limits.task_type)
      AND (flow_limits.concurrency_key = '' OR t.concurrency_key = flow_limits.concurrency_key));

CREATE TABLE flow_starts_buckets (
    task_type       TEXT    NOT NULL,
    concurrency_key TEXT    NOT NULL,
    bucket_end      REAL    NOT NULL,
    starts          INTEGER NOT NULL CHECK (starts >= 1),
    PRIMARY KEY (task_type, concurrency_key, bucket_end)
) WITHOUT ROWID;

INSERT INTO flow_starts_buckets (task_type, concurrency_key, bucket_end, starts)
SELECT s.task_type, s.concurrency_key,
       (CAST(s.started_at / (l.period / 20.0) AS INTEGER) + 1) * (l.period / 20.0), count(*)
FROM flow_starts s
JOIN flow_limits l ON l.task_type = s.task_type AND l.concurrency_key = s.concurrency_key
WHERE l.period IS NOT NULL
GROUP BY 1, 2, 3;

DROP TABLE flow_starts;

ALTER TABLE flow_starts_buckets RENAME TO flow_starts;
