-- 016: the idle forecast made by one worker for the whole deployment per interval.
--
-- No index serves an idle refresh token's condition (one on the last refresh would cost every
-- refresh's commit an index entry), so the forecast of idle refresh tokens reads the whole
-- integrations table, once per provider with an idle limit. Every worker made it every
-- FERRULE_EVENTS_FORECAST_MS, the same answer each time: at ten workers and ten million rows, ten
-- reads of the table per provider an hour. Now a pass takes the provider's turn first, in the same
-- statement: the row here is locked (skipped when another worker's pass holds it) and its time
-- moved on, and the table is read only when the last pass is older than the interval. The turn
-- commits or rolls back with the pass's events, so a pass that fails (a statement timeout) leaves
-- the turn to the next one. One row per provider, made by the first pass.

CREATE TABLE forecast_turns (
    provider   text PRIMARY KEY,
    ran_at     timestamptz NOT NULL,     -- when the last idle forecast of the provider began
    ran_by     text NOT NULL             -- the worker that made it
);
COMMENT ON TABLE forecast_turns IS
    'the last forecast of idle refresh tokens per provider, made by one worker for all';
