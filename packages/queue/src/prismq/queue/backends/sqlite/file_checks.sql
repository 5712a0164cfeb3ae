-- Queries that look at a database file before the queue writes anything to it.

-- The file's marker, schema version and every schema object, read in one statement (one
-- read transaction), so a process creating the schema meanwhile is seen either before
-- its commit or after it, never half-way.
-- name: file_shape
SELECT (SELECT application_id FROM pragma_application_id()),
       (SELECT user_version FROM pragma_user_version()),
       (SELECT json_group_array(json_array(type, name)) FROM sqlite_master);
