-- Row-level copy of tasks between databases (prismq.queue.migrate), PostgreSQL side.
-- {columns} is the full task column list; {updates} sets every column from "excluded".

-- name: count_tasks
SELECT count(*) FROM tasks;

-- name: tasks_after
SELECT {columns} FROM tasks WHERE id > %(after)s ORDER BY id LIMIT %(limit)s;

-- name: tasks_between
SELECT {columns} FROM tasks WHERE id BETWEEN %(first)s AND %(last)s ORDER BY id;

-- name: upsert_task
INSERT INTO tasks ({columns}) VALUES ({values})
ON CONFLICT (id) DO UPDATE SET {updates};

-- Never hand out a copied id again.
-- name: advance_task_ids
SELECT setval(pg_get_serial_sequence('tasks', 'id'),
              greatest((SELECT coalesce(max(id), 0) FROM tasks),
                       nextval(pg_get_serial_sequence('tasks', 'id'))));
