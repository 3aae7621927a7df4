-- ferrule-migrate: no-transaction
-- 018: retry tokens and dashboard links are collected like connect states. Nothing removed them:
-- the runtime role may not DELETE, and 004's function covered pending_authorizations alone, so
-- every dashboard link and retry token ever issued stayed. The same function now also removes
-- rows of gateway_retry_tokens and gateway_dashboard_links a day past their expiry, spent or
-- not; the workers call it when they write a connect state, a retry token or a dashboard link.
--
-- Each call removes at most 100 rows of each table, those it can lock without waiting (SKIP
-- LOCKED: two writers never queue behind each other's collection), so a backlog (the rows left
-- before this release) goes a bounded slice per write rather than in one slow write. Every write
-- adds one row and removes up to 100 stale ones, so a backlog shrinks as the service is used.
--
-- Statement by statement (first line), each safe to run again: the indexes are built
-- concurrently, since both tables may be large by now and a plain build would hold every link
-- and retry token issued meanwhile; CREATE OR REPLACE keeps the function's owner and grants
-- (only the runtime roles may EXECUTE it, migrations/grant.c), so grant.c needs no change, and
-- workers of the previous release, which call it on every connect, collect the new tables too.

-- The collection finds the stale rows on these, whatever the tables' size.
CREATE INDEX CONCURRENTLY IF NOT EXISTS gateway_retry_tokens_expiry ON gateway_retry_tokens (expires_at);
CREATE INDEX CONCURRENTLY IF NOT EXISTS gateway_dashboard_links_expiry ON gateway_dashboard_links (expires_at);

-- As in 004: schema-qualified, with this schema then pg_temp as its search_path, so a caller's
-- temporary table cannot stand in for the real one. ctid = ANY (ARRAY (...)) deletes by the rows'
-- addresses (a TID scan), so the LIMIT bounds the delete as well as the search.
DO $do$
BEGIN
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %1$I.ferrule_gc_pending_authorizations () RETURNS bigint
            LANGUAGE sql SECURITY DEFINER SET search_path = %1$I, pg_temp AS $body$
            WITH p AS (DELETE FROM pending_authorizations WHERE ctid = ANY (ARRAY (
                           SELECT ctid FROM pending_authorizations WHERE expires_at < now () - interval '1 day'
                           LIMIT 100 FOR UPDATE SKIP LOCKED))
                       RETURNING 1),
                 r AS (DELETE FROM gateway_retry_tokens WHERE ctid = ANY (ARRAY (
                           SELECT ctid FROM gateway_retry_tokens WHERE expires_at < now () - interval '1 day'
                           LIMIT 100 FOR UPDATE SKIP LOCKED))
                       RETURNING 1),
                 d AS (DELETE FROM gateway_dashboard_links WHERE ctid = ANY (ARRAY (
                           SELECT ctid FROM gateway_dashboard_links WHERE expires_at < now () - interval '1 day'
                           LIMIT 100 FOR UPDATE SKIP LOCKED))
                       RETURNING 1)
            SELECT (SELECT count (*) FROM p) + (SELECT count (*) FROM r) + (SELECT count (*) FROM d)
        $body$ $f$, current_schema ());
END
$do$;
-- already so since 004 (CREATE OR REPLACE keeps it); repeated for a reader of this file alone
REVOKE ALL ON FUNCTION ferrule_gc_pending_authorizations () FROM PUBLIC;
