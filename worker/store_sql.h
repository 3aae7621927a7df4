/* store_sql.h - the text of the statements the refresh protocol runs for every refresh (the claim,
 * the commit's compare-and-set) and of an integration's row as the store reads it: macros only,
 * shared by the store (store.c prepares the two statements in every session) and the benchmark
 * (tests/bench runs the same text through pgbench, so that its diagnostic row can never drift
 * from what the worker sends) */
#ifndef FERRULE_STORE_SQL_H
#define FERRULE_STORE_SQL_H

#define STORE_NOTIFY_CHANNEL "ferrule_integrations"   /* "<worker> <integration>": drop the cache entry */
/* A new event to deliver (events_emit, migration 006). Only the worker's main connection listens
 * to either channel: PostgreSQL wakes every session of the database that listens to anything for
 * every commit that notifies, so a second listening session per worker would run a transaction of
 * its own for every refresh batch of the deployment. The loop passes the wake-up on to its event
 * delivery thread (store_dispatch_notifies, STORE_NOTIFY_EVENTS). */
#define STORE_EVENTS_NOTIFY "ferrule_events"

/* An integration's row as store_row_t holds it (store_internal.h: store_fill_row reads it). */
#define STORE_ROW_COLUMNS \
    "id, provider, status, key_id, access_token, " \
    "COALESCE(extract(epoch FROM access_expires_at)::bigint, 0), refresh_token, refresh_fingerprint, " \
    "generation, array_to_string(scopes, ' '), last_error_code, last_error_message, " \
    "COALESCE(extract(epoch FROM last_error_at)::bigint, 0), COALESCE(extract(epoch FROM last_refresh_at)::bigint, 0), " \
    "extract(epoch FROM created_at)::bigint, extract(epoch FROM updated_at)::bigint, lease_owner, " \
    "COALESCE(replace(lease_token::text, '-', ''), ''), " \
    "GREATEST(COALESCE((extract(epoch FROM lease_expires_at - clock_timestamp()) * 1000)::bigint, 0), 0), " \
    "refresh_token_missing AND refresh_token IS NULL, COALESCE(access_lifetime_s, 0), " \
    "COALESCE(interrupted_generation = generation, false)"

/* The claim as one statement: lock the row without waiting (SKIP LOCKED: a row locked by another
 * session, an import, a rekey, an operator's transaction, must not hold up the loop, and in a
 * batch must not abort the others), decide, and take the lease when acquired. A lease still set
 * but expired was left by a holder that died or stalled during its refresh: if its provider call
 * went out, the provider may have rotated the refresh token; the chain says so, and the generation
 * is remembered so that an invalid_grant now can be explained. A lease held under this worker's
 * own id, live or not, is the orphan of a claim whose answer this process never read (a batch cut
 * off by a lost connection or a deadline, which the server still committed): no refresh of that
 * integration is in flight here (single flight), so no provider call was made under it, and the
 * claim takes it over at once instead of waiting for it to expire or calling it interrupted. (A
 * restarted worker releases its earlier run's leases before its first claim; two processes under
 * one worker id are not supported.) The last column is the outcome:
 * inactive, fresh, busy, acquired; locked or missing when no row was read. The parameters: $1 the
 * integration, $2 the generation the caller knew, $3 the expiry (epoch seconds) the caller needs,
 * $4 forced, $5 the worker's id, $6 the new lease's token (32 hex digits), $7 the lease in ms. */
#define STORE_CLAIM_SQL \
    "WITH r AS (SELECT * FROM integrations WHERE id = $1 FOR UPDATE SKIP LOCKED)," \
    " d AS (SELECT CASE WHEN r.status <> 'active' THEN 'inactive'" \
    "   WHEN r.access_token IS NOT NULL AND (($4::boolean AND r.generation > $2::bigint)" \
    "        OR (NOT $4::boolean AND COALESCE(extract(epoch FROM r.access_expires_at)::bigint, 0) >= $3::bigint))" \
    "     THEN 'fresh'" \
    "   WHEN GREATEST(COALESCE((extract(epoch FROM r.lease_expires_at - clock_timestamp()) * 1000)::bigint, 0), 0) > 0" \
    "        AND r.lease_owner IS DISTINCT FROM $5" \
    "     THEN 'busy'" \
    "   ELSE 'acquired' END AS outcome FROM r)," \
    " u AS (UPDATE integrations i SET lease_owner = $5, lease_token = $6::uuid, lease_id = NULL," \
    "    lease_expires_at = clock_timestamp() + $7::bigint * interval '1 millisecond'," \
    "    interrupted_generation = CASE WHEN r.lease_owner <> $5 THEN r.generation" \
    "                                  ELSE i.interrupted_generation END" \
    "  FROM r, d WHERE i.id = r.id AND d.outcome = 'acquired'" \
    "  RETURNING NULLIF (r.lease_owner, $5) AS old_owner, r.generation AS old_generation)," \
    " c AS (INSERT INTO token_chain (integration_id, generation, worker, outcome, detail)" \
    "  SELECT $1, u.old_generation, u.old_owner, 'interrupted'," \
    "   'the refresh lease of worker \"' || u.old_owner || '\" expired before it stored a result: the worker " \
    "stopped or stalled during the refresh, and if its provider call went out the provider may have rotated " \
    "the refresh token'" \
    "  FROM u WHERE u.old_owner IS NOT NULL)" \
    "SELECT " STORE_ROW_COLUMNS ", d.outcome FROM r, d" \
    " UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL," \
    "  NULL, NULL, NULL, NULL, NULL, NULL, NULL," \
    "  CASE WHEN EXISTS (SELECT 1 FROM integrations WHERE id = $1) THEN 'locked' ELSE 'missing' END" \
    "  WHERE NOT EXISTS (SELECT 1 FROM r)"
#define STORE_CLAIM_OUTCOME_COLUMN 22

/* The commit's compare-and-set, one statement, so one round trip: the UPDATE locks the row and is
 * the compare-and-set; the chain row and the notification commit with it or not at all. The check
 * is on the generation: tokens the provider has just issued are the newest there are, so they are
 * kept even when a stalled worker's lease was overtaken, and, when they carry a rotated refresh
 * token, even over a needs_reconnect recorded at the same generation (the overtaker spent the
 * token this one replaced, and its invalid_grant says nothing about the new one). One row when
 * committed, none when the compare-and-set lost. The parameters: $1 the integration, $2 the
 * generation claimed, $3 the key's id, $4 and $6 the sealed access and refresh tokens, $5 the
 * access token's expiry (epoch seconds), $7 the refresh token's fingerprint, $8 the scopes granted
 * (NULL: unchanged), $9 the worker's id, $10 whether the refresh token was rotated, $11 the lease's
 * token, $12 the access token's lifetime in seconds. */
/* the lease is still this refresh's: read from the row being updated, its newest version once
 * any lock it waited for is gone (a join with a second read of the row would see the statement's
 * snapshot, and cost an index scan and a join for every commit) */
#define STORE_COMMIT_MINE "(i.lease_owner = $9 AND i.lease_token = $11::uuid IS TRUE)"
#define STORE_COMMIT_SQL \
    "WITH prev AS (SELECT status FROM integrations WHERE id = $1),"     /* the snapshot: before u */ \
    " u AS (" \
    "  UPDATE integrations i SET key_id = $3, access_token = $4, access_expires_at = to_timestamp($5::bigint)," \
    "    access_lifetime_s = $12::integer," \
    "    refresh_token = $6, refresh_fingerprint = $7, generation = i.generation + 1, status = 'active'," \
    "    scopes = COALESCE(string_to_array($8, ' '), i.scopes)," \
    "    lease_owner = CASE WHEN " STORE_COMMIT_MINE " THEN NULL ELSE i.lease_owner END," \
    "    lease_expires_at = CASE WHEN " STORE_COMMIT_MINE " THEN NULL ELSE i.lease_expires_at END," \
    "    lease_token = CASE WHEN " STORE_COMMIT_MINE " THEN NULL ELSE i.lease_token END," \
    "    last_refresh_at = now()," \
    "    last_error_code = NULL, last_error_message = NULL, last_error_at = NULL, updated_at = now()" \
    "  WHERE i.id = $1 AND i.generation = $2::bigint" \
    "    AND (i.status = 'active' OR (i.status = 'needs_reconnect' AND $10::boolean))" \
    "  RETURNING i.generation)," \
    " c AS (" \
    "  INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, rotated, detail)" \
    "  SELECT $1, u.generation, $9, 'refreshed', $7, $10::boolean," \
    "    CASE WHEN prev.status = 'needs_reconnect' THEN 'recovered: the invalid_grant recorded before was for the" \
    " refresh token this rotation replaced' END" \
    "  FROM u, prev RETURNING generation)" \
    "SELECT generation, pg_notify('" STORE_NOTIFY_CHANNEL "', $9 || ' ' || $1) FROM c" \
    ""

/* Since when an integration's refresh token has gone unused: its last refresh, or the start of
 * its current grant when none came since (connected_at, migration 011; created_at for grants
 * stored before it). p: the table's alias and a dot, or "". */
#define STORE_IDLE_SINCE_OF(p) \
    "GREATEST (COALESCE (" p "last_refresh_at, " p "created_at), COALESCE (" p "connected_at, " p "created_at))"
#define STORE_IDLE_SINCE STORE_IDLE_SINCE_OF ("")

#endif
