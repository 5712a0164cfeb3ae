-- Triggers that keep each flow limit's counter (flow_limits.leased) for SQLite, created
-- with the first limit and dropped with the last (SQLiteBackend._sync_flow_triggers):
-- a queue with no limit pays nothing for them. Each query creates the trigger
-- flow_count_<name>: +1 on every limit whose scope covers a task that becomes leased, -1
-- when it stops being leased. Three equality updates, one per shape of scope (type, key,
-- both), each a primary-key lookup (an IN ('', ...) form costs several times more).
-- name: enter
CREATE TRIGGER IF NOT EXISTS flow_count_enter
AFTER UPDATE OF status, task_type, concurrency_key ON tasks
WHEN NEW.status = 'leased' AND (OLD.status <> 'leased' OR OLD.task_type <> NEW.task_type
                                OR OLD.concurrency_key IS NOT NEW.concurrency_key)
BEGIN
    UPDATE flow_limits SET leased = leased + 1 WHERE task_type = NEW.task_type AND concurrency_key = '';
    UPDATE flow_limits SET leased = leased + 1 WHERE task_type = '' AND concurrency_key = NEW.concurrency_key;
    UPDATE flow_limits SET leased = leased + 1
    WHERE task_type = NEW.task_type AND concurrency_key = NEW.concurrency_key;
END;

-- name: leave
CREATE TRIGGER IF NOT EXISTS flow_count_leave
AFTER UPDATE OF status, task_type, concurrency_key ON tasks
WHEN OLD.status = 'leased' AND (NEW.status <> 'leased' OR OLD.task_type <> NEW.task_type
                                OR OLD.concurrency_key IS NOT NEW.concurrency_key)
BEGIN
    UPDATE flow_limits SET leased = leased - 1 WHERE task_type = OLD.task_type AND concurrency_key = '';
    UPDATE flow_limits SET leased = leased - 1 WHERE task_type = '' AND concurrency_key = OLD.concurrency_key;
    UPDATE flow_limits SET leased = leased - 1
    WHERE task_type = OLD.task_type AND concurrency_key = OLD.concurrency_key;
END;

-- name: insert
CREATE TRIGGER IF NOT EXISTS flow_count_insert AFTER INSERT ON tasks WHEN NEW.status = 'leased'
BEGIN
    UPDATE flow_limits SET leased = leased + 1 WHERE task_type = NEW.task_type AND concurrency_key = '';
    UPDATE flow_limits SET leased = leased + 1 WHERE task_type = '' AND concurrency_key = NEW.concurrency_key;
    UPDATE flow_limits SET leased = leased + 1
    WHERE task_type = NEW.task_type AND concurrency_key = NEW.concurrency_key;
END;

-- name: delete
CREATE TRIGGER IF NOT EXISTS flow_count_delete AFTER DELETE ON tasks WHEN OLD.status = 'leased'
BEGIN
    UPDATE flow_limits SET leased = leased - 1 WHERE task_type = OLD.task_type AND concurrency_key = '';
    UPDATE flow_limits SET leased = leased - 1 WHERE task_type = '' AND concurrency_key = OLD.concurrency_key;
    UPDATE flow_limits SET leased = leased - 1
    WHERE task_type = OLD.task_type AND concurrency_key = OLD.concurrency_key;
END;

-- name: drop_enter
DROP TRIGGER IF EXISTS flow_count_enter;

-- name: drop_leave
DROP TRIGGER IF EXISTS flow_count_leave;

-- name: drop_insert
DROP TRIGGER IF EXISTS flow_count_insert;

-- name: drop_delete
DROP TRIGGER IF EXISTS flow_count_delete;
