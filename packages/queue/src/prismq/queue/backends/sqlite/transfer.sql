-- Row-level copy of tasks between databases (prismq.queue.migrate), SQLite side.
-- {columns} is the full task column list; {updates} sets every column from "excluded".

-- name: count_tasks
SELECT count(*) FROM tasks;

-- name: tasks_after
SELECT {columns} FROM tasks WHERE id > :after ORDER BY id LIMIT :limit;

-- name: tasks_between
SELECT {columns} FROM tasks WHERE id BETWEEN :first AND :last ORDER BY id;

-- name: upsert_task
INSERT INTO tasks ({columns}) VALUES ({values})
ON CONFLICT (id) DO UPDATE SET {updates};
