-- PrismQ Queue schema for PostgreSQL, version 7: flow-control counters. Same meaning as
-- the SQLite migration (sqlite/migrations/0008_flow_counters.sql): flow_limits.leased
-- holds the tasks of the limit's scope leased now, and flow_starts counts the claims
-- under a rate limit per bucket of period / 20 seconds (prismq.queue.flow.RATE_BUCKETS).
--
-- The counters are kept by the statement trigger that already runs on every change of
-- tasks (prismq_tasks_changed): once per statement, from its transition tables, and only
-- when a limit exists. Tasks that become leased are added to the counter, in key order
-- (the order claims lock the limit rows); tasks that stop being leased are written to
-- flow_released instead, which takes no lock, so outcomes never wait for a claim. The
-- next claim under the limit folds them into the counter; until then readers subtract
-- them. The same trigger counts the tasks a claim leases into the current bucket of each
-- rate limit covering them, so a claim records its starts in its own statement.
-- tasks is locked against writes while the counters are first set.

LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE flow_limits ADD COLUMN leased integer NOT NULL DEFAULT 0;

UPDATE flow_limits l SET leased = (
    SELECT count(*) FROM tasks t
    WHERE t.status = 'leased'
      AND (l.task_type = '' OR t.task_type = l.task_type)
      AND (l.concurrency_key = '' OR t.concurrency_key = l.concurrency_key));

CREATE TABLE flow_released (
    task_type       text    NOT NULL,
    concurrency_key text    NOT NULL,
    released        integer NOT NULL CHECK (released >= 1)
);

CREATE INDEX idx_flow_released ON flow_released (task_type, concurrency_key);

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
    scope_types  text[];
    scope_keys   text[];
    deltas       integer[];
    periods      double precision[];
    starts_at    double precision[];
    any_released boolean := false;
    any_started  boolean := false;
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
    -- Flow-limit counters: per limit, +n for the tasks of its scope that became leased
    -- (added to the counter, which locks the limit row, in key order), -n for those that
    -- stopped being leased (written to flow_released: no lock). A task leased before and
    -- after counts 0. An increment folds the limit's released rows into its counter.
    -- The changed tasks are grouped by (type, key) before they meet the limits: a claim
    -- or a batch of outcomes is one or a few groups however many tasks it holds.
    IF NOT EXISTS (SELECT 1 FROM flow_limits) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(c.task_type ORDER BY c.task_type, c.concurrency_key),
               array_agg(c.concurrency_key ORDER BY c.task_type, c.concurrency_key),
               array_agg(c.delta ORDER BY c.task_type, c.concurrency_key),
               array_agg(c.period ORDER BY c.task_type, c.concurrency_key),
               array_agg(c.started_at ORDER BY c.task_type, c.concurrency_key)
        INTO scope_types, scope_keys, deltas, periods, starts_at
        FROM (
            SELECT l.task_type, l.concurrency_key, sum(m.delta)::integer AS delta,
                   CASE WHEN l.max_starts IS NOT NULL THEN l.period END AS period,
                   max(m.started_at) AS started_at
            FROM (SELECT task_type, coalesce(concurrency_key, '') AS concurrency_key, count(*) AS delta,
                         NULL::double precision AS started_at
                  FROM new_rows WHERE status = 'leased' GROUP BY 1, 2) m
            JOIN flow_limits l
              ON l.task_type IN ('', m.task_type) AND l.concurrency_key IN ('', m.concurrency_key)
            GROUP BY l.task_type, l.concurrency_key, l.max_starts, l.period HAVING sum(m.delta) <> 0
        ) c;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(c.task_type ORDER BY c.task_type, c.concurrency_key),
               array_agg(c.concurrency_key ORDER BY c.task_type, c.concurrency_key),
               array_agg(c.delta ORDER BY c.task_type, c.concurrency_key),
               array_agg(c.period ORDER BY c.task_type, c.concurrency_key),
               array_agg(c.started_at ORDER BY c.task_type, c.concurrency_key)
        INTO scope_types, scope_keys, deltas, periods, starts_at
        FROM (
            SELECT l.task_type, l.concurrency_key, sum(m.delta)::integer AS delta,
                   CASE WHEN l.max_starts IS NOT NULL THEN l.period END AS period,
                   max(m.started_at) AS started_at
            FROM (SELECT task_type, coalesce(concurrency_key, '') AS concurrency_key, -count(*) AS delta,
                         NULL::double precision AS started_at
                  FROM old_rows WHERE status = 'leased' GROUP BY 1, 2) m
            JOIN flow_limits l
              ON l.task_type IN ('', m.task_type) AND l.concurrency_key IN ('', m.concurrency_key)
            GROUP BY l.task_type, l.concurrency_key, l.max_starts, l.period HAVING sum(m.delta) <> 0
        ) c;
    ELSE
        SELECT array_agg(c.task_type ORDER BY c.task_type, c.concurrency_key),
               array_agg(c.concurrency_key ORDER BY c.task_type, c.concurrency_key),
               array_agg(c.delta ORDER BY c.task_type, c.concurrency_key),
               array_agg(c.period ORDER BY c.task_type, c.concurrency_key),
               array_agg(c.started_at ORDER BY c.task_type, c.concurrency_key)
        INTO scope_types, scope_keys, deltas, periods, starts_at
        FROM (
            SELECT l.task_type, l.concurrency_key, sum(m.delta)::integer AS delta,
                   CASE WHEN l.max_starts IS NOT NULL THEN l.period END AS period,
                   max(m.started_at) AS started_at
            FROM (SELECT task_type, coalesce(concurrency_key, '') AS concurrency_key, sum(delta) AS delta,
                         max(started_at) AS started_at
                  FROM (SELECT task_type, concurrency_key, 1 AS delta, started_at
                        FROM new_rows WHERE status = 'leased'
                        UNION ALL
                        SELECT task_type, concurrency_key, -1, NULL
                        FROM old_rows WHERE status = 'leased') AS t
                  GROUP BY 1, 2) m
            JOIN flow_limits l
              ON l.task_type IN ('', m.task_type) AND l.concurrency_key IN ('', m.concurrency_key)
            GROUP BY l.task_type, l.concurrency_key, l.max_starts, l.period HAVING sum(m.delta) <> 0
        ) c;
    END IF;
    IF deltas IS NULL THEN
        RETURN NULL;
    END IF;
    FOR i IN 1 .. array_length(deltas, 1) LOOP
        IF deltas[i] > 0 THEN
            WITH folded AS (
                DELETE FROM flow_released r
                WHERE r.task_type = scope_types[i] AND r.concurrency_key = scope_keys[i]
                RETURNING r.released
            )
            UPDATE flow_limits
            SET leased = leased + deltas[i] - (SELECT coalesce(sum(released), 0) FROM folded)
            WHERE task_type = scope_types[i] AND concurrency_key = scope_keys[i];
            any_started := any_started OR (TG_OP = 'UPDATE' AND periods[i] IS NOT NULL);
        ELSE
            any_released := true;
        END IF;
    END LOOP;
    IF any_released THEN
        INSERT INTO flow_released (task_type, concurrency_key, released)
        SELECT d.task_type, d.concurrency_key, -d.delta
        FROM unnest(scope_types, scope_keys, deltas) AS d (task_type, concurrency_key, delta)
        WHERE d.delta < 0;
    END IF;
    -- Starts under a rate limit: the tasks a claim leased (queued -> leased, an UPDATE),
    -- counted into the bucket of their start, period / 20 seconds wide
    -- (prismq.queue.flow.rate_bucket_end), after the counter update locked the limit row.
    IF any_started THEN
        INSERT INTO flow_starts (task_type, concurrency_key, bucket_end, starts)
        SELECT d.task_type, d.concurrency_key,
               (floor(d.started_at / (d.period / 20)) + 1) * (d.period / 20), d.delta
        FROM unnest(scope_types, scope_keys, deltas, periods, starts_at)
            AS d (task_type, concurrency_key, delta, period, started_at)
        WHERE d.delta > 0 AND d.period IS NOT NULL AND d.started_at IS NOT NULL
        ORDER BY 1, 2
        ON CONFLICT (task_type, concurrency_key, bucket_end)
        DO UPDATE SET starts = flow_starts.starts + excluded.starts;
    END IF;
    RETURN NULL;
END
$$;
