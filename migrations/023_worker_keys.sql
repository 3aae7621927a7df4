-- 023: the encryption keys the workers seal with, for "ferrule-migrate rekey"'s guard.
--
-- rekey re-seals every value under the key it is given as current. It used to accept that key
-- when some stored value was sealed under it, which a half-finished rotation satisfies for
-- both keys: given the old key as current and the new one as old, it re-sealed the workers' new
-- values under the old key and said the old keys could go. key_stats holds the key of the last
-- count only, one worker's. Each worker now records here, at every key count's claim (every
-- FERRULE_KEY_STATS_MS), the key it seals with and until when that record holds (twice its
-- interval); rekey refuses when a live record names another key than its current one, so a
-- fleet still on the old key, or on two keys during a rolling change, is refused.
-- One row per key ever used: a handful.

CREATE TABLE worker_keys (
    key_id       integer PRIMARY KEY,    -- a worker's current key (FERRULE_ENCRYPTION_KEY's id)
    seen_at      timestamptz NOT NULL,   -- the last time a worker said it seals with it
    live_until   timestamptz NOT NULL    -- a worker using it says so again before then
);
COMMENT ON TABLE worker_keys IS
    'the encryption keys the workers seal with, for "ferrule-migrate rekey"''s guard';
