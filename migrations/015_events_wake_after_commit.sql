-- 015: an event's wake-up of the delivery threads follows its commit.
--
-- events_emit (006) called pg_notify ('ferrule_events') inside the transaction that wrote the
-- event. PostgreSQL serializes the transactions that notify with one lock, taken in the commit and
-- held until the commit is flushed (and, with a synchronous standby, acknowledged): every import,
-- connection, scope report and change of status to needs_reconnect held that lock through its
-- flush, and a notifying commit stalled elsewhere made each of them wait for it and fail on
-- lock_timeout (it_outage). The worker already sends its cache's notifications after the commit,
-- in a small transaction of its own (STORE_NOTIFY_SQL in worker/store_sql.h). The function now
-- leaves a mark on its session instead, kept only if the transaction commits (a setting changed
-- with set_config is undone by a rollback), and that transaction wakes the delivery threads when
-- it finds the mark, then clears it. Nothing is lost meanwhile: an event is a committed row, and
-- every delivery thread also looks for due deliveries every FERRULE_EVENTS_POLL_MS; the wake-up
-- only makes the first look immediate. During a rolling upgrade, workers of an earlier release
-- do not look for the mark: the events they write are sent on the next poll.
CREATE OR REPLACE FUNCTION events_emit (p_type text, p_integration text, p_provider text, p_diagnosis text,
                                        p_generation bigint, p_detail text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (type, integration_id, provider, diagnosis, generation, detail)
        VALUES (p_type, p_integration, p_provider, p_diagnosis, p_generation, p_detail);
    PERFORM set_config ('ferrule.events_written', 'on', false);
END;
$$;
