-- ferrule-migrate: no-transaction
-- 024: an endpoint's newest delivery (the first read of its delivery thread, at every worker's
-- start: how far back its first fan-out looks) was found by reading the deliveries' primary key
-- (event_seq, endpoint) from the top down, joined to the events backwards as well, through every
-- newer delivery of the other endpoints: for an endpoint with rare events, 60,000 newer
-- deliveries read 60,000 events (it_events_steady), 1 million took 155 ms, and some 30 million
-- went past the events threads' 5 s statement timeout, after which that endpoint never fanned
-- out again. This index answers it with its last entry for the endpoint. The claim writes none
-- of its columns, so it stays a HOT update. Built concurrently (see 012); workers of the
-- previous release use it too.
CREATE INDEX CONCURRENTLY IF NOT EXISTS event_deliveries_by_endpoint_seq
    ON event_deliveries (endpoint, event_seq);
