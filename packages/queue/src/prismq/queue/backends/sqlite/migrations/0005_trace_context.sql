-- PrismQ Queue schema, version 5: the trace context a task carries.
--
-- trace_context holds the W3C trace context (a JSON object such as
-- {"traceparent": "00-...-01"}) of the code that enqueued the task, written when
-- OpenTelemetry tracing is on (prismq.queue.observability.tracing), so the worker's
-- execution span joins the enqueue's trace. NULL when tracing is off.

ALTER TABLE tasks ADD COLUMN trace_context TEXT CHECK (trace_context IS NULL OR json_valid(trace_context));
