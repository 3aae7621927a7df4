-- 013: the count of values sealed with a retired key, made by one worker for all of them. Every
-- worker used to count on its own, every FERRULE_KEY_STATS_MS: a read of the whole integrations
-- table per worker per minute, the same answer each time, and past about five million rows a
-- read the statement timeout cut short every time. Now the worker whose turn it is (the first to
-- find the last count older than the interval) walks the table a range of blocks at a time and
-- stores the result here; the others read it. One row.

CREATE TABLE key_stats (
    one            boolean PRIMARY KEY DEFAULT true CHECK (one),
    key_id         integer,            -- the current key the count was made against
    integrations   bigint,             -- integrations with a value sealed under another key
    connects       bigint,             -- live connects with a verifier sealed under another key
    counted_at     timestamptz,        -- when the last count ended; NULL before the first
    walker         text,               -- the worker counting now, NULL when none
    walk_until     timestamptz         -- its turn ends then unless it goes on (a worker that died)
);
COMMENT ON TABLE key_stats IS
    'the last count of values on retired keys (ferrule_worker_values_on_old_keys), made by one worker for all';
INSERT INTO key_stats DEFAULT VALUES;
