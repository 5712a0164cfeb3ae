-- PrismQ Queue schema for PostgreSQL, version 7: flow-control counters. Same meaning as
-- the SQLite migration (sqlite/migrations/0008_flow_counters.sql): flow_limits.leased
-- holds the tasks of the limit's scope leased now, and flow_starts counts the claims
-- under a rate limit per bucket of period / 20 seconds (prismq.queue.flow.RATE_BUCKETS).
--
-- The counters are kept by the statement trigger that already runs on every change of
-- tasks (prismq_tasks_changed): once per statement, from its transition tables, and only
-- when a limit exists. It updates the counters in key order, the order claims lock them.
-- tasks is locked against writes while the counters are first set, so none is missed.

LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE flow_limits ADD COLUMN leased integer NOT NULL DEFAULT 0;

UPDATE flow_limits l SET leased = (
    SELECT count(*) FROM tasks t
    WHERE t.status = 'leased'
      AND (l.task_type = '' OR t.task_type = l.task_type)
      AND (l.concurrency_key = '' OR t.concurrency_key = l.concurrency_key));

CREATE TABLE flow_starts_buckets (
    task_type       text             NOT NULL,
    concurrency_key text             NOT NULL,
    bucket_end      double precision NOT NULL,
    starts          integer          NOT NULL CHECK (starts >= 1),
    PRIMARY KEY (task_type, concurrency_key, bucket_end)
);

INSERT INTO flow_starts_buckets (task_type, concurrency_key, bucket_end, starts)
SELECT s.task_type, s.concurrency_key,
       (floor(s.started_at / (l.period / 20.0)) + 1) * (l.period / 20.0), count(*)
FROM flow_starts s
JOIN flow_limits l ON l.task_type = s.task_type AND l.concurrency_key = s.concurrency_key
WHERE l.period IS NOT NULL
GROUP BY 1, 2, 3;

DROP TABLE flow_starts;

ALTER TABLE flow_starts_buckets RENAME TO flow_starts;

ALTER INDEX flow_starts_buckets_pkey RENAME TO flow_starts_pkey;

CREATE OR REPLACE FUNCTION prismq_tasks_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    change record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT 1 FROM old_rows) THEN
            RETURN NULL;
        END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM new_rows) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(hashtext('prismq_queue:' || current_schema()));
    PERFORM nextval('prismq_data_version');
    -- Each transition table is named only in the branch of the event that defines it.
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('prismq_queue', current_schema());
    ELSIF TG_OP = 'UPDATE' THEN
        IF EXISTS (
            SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE n.status = 'queued' AND o.status <> 'queued'
        ) THEN
            PERFORM pg_notify('prismq_queue', current_schema());
        END IF;
    END IF;
    -- Flow-limit counters: +1 per task of a limit's scope that became leased, -1 per one
    -- that stopped being leased; a task leased before and after counts 0.
    IF NOT EXISTS (SELECT 1 FROM flow_limits) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        FOR change IN
            SELECT l.task_type, l.concurrency_key, count(*) AS delta
            FROM new_rows n JOIN flow_limits l
              ON l.task_type IN ('', n.task_type) AND l.concurrency_key IN ('', coalesce(n.concurrency_key, ''))
            WHERE n.status = 'leased'
            GROUP BY 1, 2 ORDER BY 1, 2
        LOOP
            UPDATE flow_limits SET leased = leased + change.delta
            WHERE task_type = change.task_type AND concurrency_key = change.concurrency_key;
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOR change IN
            SELECT l.task_type, l.concurrency_key, count(*) AS delta
            FROM old_rows o JOIN flow_limits l
              ON l.task_type IN ('', o.task_type) AND l.concurrency_key IN ('', coalesce(o.concurrency_key, ''))
            WHERE o.status = 'leased'
            GROUP BY 1, 2 ORDER BY 1, 2
        LOOP
            UPDATE flow_limits SET leased = leased - change.delta
            WHERE task_type = change.task_type AND concurrency_key = change.concurrency_key;
        END LOOP;
    ELSE
        FOR change IN
            SELECT l.task_type, l.concurrency_key, sum(m.delta) AS delta
            FROM (SELECT task_type, concurrency_key, -1 AS delta FROM old_rows WHERE status = 'leased'
                  UNION ALL
                  SELECT task_type, concurrency_key, 1 FROM new_rows WHERE status = 'leased') m
            JOIN flow_limits l
              ON l.task_type IN ('', m.task_type) AND l.concurrency_key IN ('', coalesce(m.concurrency_key, ''))
            GROUP BY 1, 2 HAVING sum(m.delta) <> 0 ORDER BY 1, 2
        LOOP
            UPDATE flow_limits SET leased = leased + change.delta
            WHERE task_type = change.task_type AND concurrency_key = change.concurrency_key;
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;
