-- PrismQ Queue schema for PostgreSQL, version 4: the trace context a task carries.
-- Same column and meaning as the SQLite schema: the W3C trace context (a JSON object such
-- as {"traceparent": "00-...-01"}) of the code that enqueued the task, written when
-- OpenTelemetry tracing is on; NULL when it is off.

ALTER TABLE tasks ADD COLUMN trace_context text CHECK (trace_context IS NULL OR trace_context::json IS NOT NULL);
