-- ferrule-migrate: no-transaction
-- 014: the webhook doctor's newest failure of an endpoint (ferrulectl webhook doctor) read and
-- sorted every failed or erring delivery of that endpoint: 19,000 failed rows, 0.7 to 1.2 s cold,
-- on the loop's connection with a 1 s statement timeout. This index holds only those rows, in the
-- order the question asks, so the answer is its last entry. Workers of this release write
-- last_attempt_at when an attempt ends, not when it is claimed, so the claim updates no column of
-- this index and stays a HOT update. Built concurrently (see 012).
CREATE INDEX CONCURRENTLY IF NOT EXISTS event_deliveries_last_error
    ON event_deliveries (endpoint, last_attempt_at)
    WHERE state IN ('pending', 'failed') AND last_error IS NOT NULL;

-- The event claim's plan follows this table's statistics, and a table that grew from nearly
-- empty (an outage's backlog piling up) kept the plan of the empty one until autovacuum's
-- analyze, which by default waits for a tenth of the table to change. A hundredth: the claim
-- sees a growing backlog sooner. A short lock that blocks no reads or writes.
ALTER TABLE event_deliveries SET (autovacuum_analyze_scale_factor = 0.01);
