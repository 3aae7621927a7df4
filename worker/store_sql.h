/* store_sql.h - the text of the statements the refresh protocol runs for every refresh (the claim,
 * the commit's compare-and-set) and of an integration's row as the store reads it: macros only,
 * shared by the store (store.c prepares the two statements in every session) and the benchmark
 * (tests/bench runs the same text through pgbench, so that its diagnostic row can never drift
 * from what the worker sends) */
#ifndef FERRULE_STORE_SQL_H
#define FERRULE_STORE_SQL_H

#define STORE_NOTIFY_CHANNEL "ferrule_integrations"   /* "<worker> <integration>": drop the cache entry */
/* A new event to deliver: sent after the commit that wrote it (STORE_NOTIFY_SQL; migration 015;
 * before it, events_emit sent it inside that transaction). Only the worker's main connection listens
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
    "COALESCE(interrupted_generation = generation, false), api_base_url"

/* A batch's first statement, before its commits and claims: two settings for the batch's
 * transaction alone (set_config's third argument: until its COMMIT or ROLLBACK), taken when its
 * statements are planned.
 * - Generic plans. The two statements below take arrays, and PostgreSQL, planning a prepared
 *   statement, compares the plan for the values at hand with the generic one, which assumes arrays
 *   of ten. For the batches of fewer than ten that are the rule it keeps planning each execution
 *   anew (pg_prepared_statements: custom_plans grows, generic_plans stays 0), which costs more than
 *   the statement's own work. One plan serves any length, so the transaction asks for it.
 * - No sequential scans. Both statements take their rows by id through the primary key, the
 *   right plan at any size of the table; but the planner prices a scan of the whole table below
 *   ten probes of the key on a table of a thousand rows or so, or on one whose statistics were
 *   taken while it was nearly empty (a new deployment), and a table whose rows change twice per
 *   refresh holds many dead versions of each, which such a scan reads every time. The
 *   benchmark's workers scanned integrations whole for every claim batch (docs/performance.md,
 *   issue 10's twenty-fifth pass; it_group_commit test_turn_statements_use_the_primary_key). */
#define STORE_GENERIC_PLANS_SQL \
    "SELECT set_config ('plan_cache_mode', 'force_generic_plan', true), set_config ('enable_seqscan', 'off', true)"

/* The "interrupted" chain rows of the leases a statement took over from another worker after they
 * expired: from a CTE u with u_id, old_owner (NULL when the lease was free or this worker's) and
 * old_generation. */
#define STORE_INTERRUPTED_INSERT \
    "INSERT INTO token_chain (integration_id, generation, worker, outcome, detail)" \
    "  SELECT u.u_id, u.old_generation, u.old_owner, 'interrupted'," \
    "   'the refresh lease of worker \"' || u.old_owner || '\" expired before it stored a result: the worker " \
    "stopped or stalled during the refresh, and if its provider call went out the provider may have rotated " \
    "the refresh token'" \
    "  FROM u WHERE u.old_owner IS NOT NULL"

/* The claims of a batch as one statement, over arrays: one statement instead of one per claim,
 * so PostgreSQL starts one executor and prepares the tables' CHECK constraints once per batch,
 * not once per refresh (docs/performance-history.md, issue 10's twenty-third pass). Each row
 * decides its own claim, as when each was a statement of its own: lock the row without
 * waiting (SKIP LOCKED:
 * a row locked by another session, an import, a rekey, an operator's transaction, must not hold
 * up the loop, and in a batch must not abort the others), decide, and take the lease when
 * acquired. A lease still set but expired was left by a holder that died or stalled during its
 * refresh: if its provider call went out, the provider may have rotated the refresh token; the
 * chain says so, and the generation is remembered so that an invalid_grant now can be explained.
 * A lease held under this worker's own id, live or not, is the orphan of a claim whose answer
 * this process never read (a batch cut off by a lost connection or a deadline, which the server
 * still committed): no refresh of that integration is in flight here (single flight), so no
 * provider call was made under it, and the claim takes it over at once instead of waiting for it
 * to expire or calling it interrupted. (A restarted worker releases its earlier run's leases
 * before its first claim; two processes under one worker id are not supported.)
 * One row per claim asked for: the row as it was (STORE_ROW_COLUMNS, nulls when no row was read),
 * the outcome (inactive, fresh, busy, acquired; locked or missing when no row was read), and the
 * claim's place in the arrays (1-based). The ids must be distinct (single flight). The
 * parameters, arrays of one element per claim: $1 the integrations, $2 the generations the caller
 * knew, $3 the expiries (epoch seconds) the caller needs, $4 forced, $6 the new leases' tokens (32
 * hex digits); and $5 the worker's id, $7 the lease in ms. */
#define STORE_CLAIM_SQL \
    "WITH x AS (SELECT * FROM unnest ($1::text[], $2::bigint[], $3::bigint[], $4::boolean[], $6::uuid[])" \
    "   WITH ORDINALITY AS x (req_id, req_generation, req_until, req_forced, req_token, req_ord))," \
    " r AS (SELECT * FROM integrations WHERE id = ANY ($1::text[]) FOR UPDATE SKIP LOCKED)," \
    " d AS (SELECT x.req_ord AS d_ord, r.id AS d_id, x.req_token AS d_token," \
    "   CASE WHEN r.status <> 'active' THEN 'inactive'" \
    "   WHEN r.access_token IS NOT NULL AND (NOT x.req_forced OR r.generation > x.req_generation)" \
    "        AND COALESCE(extract(epoch FROM r.access_expires_at)::bigint, 0) >= x.req_until" \
    "     THEN 'fresh'" \
    "   WHEN GREATEST(COALESCE((extract(epoch FROM r.lease_expires_at - clock_timestamp()) * 1000)::bigint, 0), 0) > 0" \
    "        AND r.lease_owner IS DISTINCT FROM $5" \
    "     THEN 'busy'" \
    "   ELSE 'acquired' END AS outcome FROM r JOIN x ON x.req_id = r.id)," \
    " u AS (UPDATE integrations i SET lease_owner = $5, lease_token = d.d_token, lease_id = NULL," \
    "    lease_expires_at = clock_timestamp() + $7::bigint * interval '1 millisecond'," \
    "    interrupted_generation = CASE WHEN r.lease_owner <> $5 THEN r.generation" \
    "                                  ELSE i.interrupted_generation END" \
    "  FROM r, d WHERE i.id = r.id AND d.d_id = r.id AND d.outcome = 'acquired'" \
    "  RETURNING i.id AS u_id, NULLIF (r.lease_owner, $5) AS old_owner, r.generation AS old_generation)," \
    " c AS (" STORE_INTERRUPTED_INSERT ")" \
    "SELECT " STORE_ROW_COLUMNS "," \
    " COALESCE (d.outcome, CASE WHEN EXISTS (SELECT 1 FROM integrations WHERE id = x.req_id) THEN 'locked'" \
    "                      ELSE 'missing' END), x.req_ord" \
    " FROM x LEFT JOIN r ON r.id = x.req_id LEFT JOIN d ON d.d_ord = x.req_ord"
#define STORE_CLAIM_OUTCOME_COLUMN 23
#define STORE_CLAIM_PLACE_COLUMN 24

/* A hold: the lease of a row a failover put behind a commit this worker waits to write again
 * (failover.c's waits, recovery.c's behind list) until another worker has written its own lost
 * commits. Once that worker has, the row holds a refresh token this worker's refresh has spent,
 * until this worker writes its own over it: a claim in between (by that worker, or any other)
 * would spend it again at the provider. The hold keeps them busy (STORE_CLAIM_SQL) meanwhile. It is
 * taken as a claim takes a lease (another worker's expired lease is recorded as interrupted), but
 * only while the row is still before generation $2, and never over another worker's live lease;
 * each look again renews it; it ends with the commit waited for (STORE_COMMIT_MINE: the same
 * token), with the conflict recorded when the wait gives up (store_conflict_start), or at its
 * expiry, which is when the wait ends. $1 the integration, $2 the generation, $3 the worker's id,
 * $4 the token, $5 the hold in ms. A row when it was taken. */
#define STORE_HOLD_SQL \
    "WITH r AS (SELECT id, generation, lease_owner FROM integrations WHERE id = $1 AND generation < $2" \
    "   AND NOT COALESCE (lease_expires_at > clock_timestamp () AND lease_owner IS DISTINCT FROM $3, false)" \
    "   FOR UPDATE)," \
    " u AS (UPDATE integrations i SET lease_owner = $3, lease_token = $4::uuid, lease_id = NULL," \
    "    lease_expires_at = clock_timestamp () + $5::bigint * interval '1 millisecond'," \
    "    interrupted_generation = CASE WHEN r.lease_owner <> $3 THEN r.generation ELSE i.interrupted_generation END" \
    "  FROM r WHERE i.id = r.id" \
    "  RETURNING i.id AS u_id, NULLIF (r.lease_owner, $3) AS old_owner, r.generation AS old_generation)," \
    " c AS (" STORE_INTERRUPTED_INSERT ")" \
    "SELECT u_id FROM u"

/* The commits of a batch as one statement over arrays, each row its own compare-and-set, so one
 * round trip and one executor for the batch; the chain rows commit with them or not at all (the
 * notifications follow the commit: STORE_NOTIFY_SQL). The rows are locked first, in id order
 * (l), so that two batches that share rows (a takeover) cannot deadlock. The check is on the
 * generation: tokens the provider has just issued are the newest there are, so they are kept even
 * when a stalled worker's lease was overtaken, and, when they carry a rotated refresh token, even
 * over a needs_reconnect recorded at the same generation (the overtaker spent the token this one
 * replaced, and its invalid_grant says nothing about the new one). One row (its place in the
 * arrays, 1-based, and the new generation) for each commit written; none for one whose
 * compare-and-set lost. The ids must be distinct
 * (single flight). The parameters, arrays of one element per commit: $1 the integrations, $2 the
 * generations claimed, $3 the keys' ids, $4 and $6 the sealed access and refresh tokens, $5 the
 * access tokens' expiries (epoch seconds), $7 the refresh tokens' fingerprints, $8 the scopes
 * granted (a null element: unchanged), $10 whether the refresh token was rotated, $11 the leases'
 * tokens, $12 the access tokens' lifetimes in seconds, $13 why the access token the provider gave
 * was unusable (a null element: it was usable; else its refresh token is stored all the same, and
 * this text becomes the last error and the chain row's detail, so that status and doctor see it),
 * $14 the API base URLs the answers carried (a null element: the stored one is kept); and $9 the
 * worker's id. */
/* the lease is still this refresh's: read from the row being updated, its newest version once
 * any lock it waited for is gone (a join with a second read of the row would see the statement's
 * snapshot, and cost an index scan and a join for every commit) */
#define STORE_COMMIT_MINE "(i.lease_owner = $9 AND i.lease_token = x.req_token IS TRUE)"
#define STORE_COMMIT_SQL \
    "WITH x AS (SELECT * FROM unnest ($1::text[], $2::bigint[], $3::integer[], $4::bytea[], $5::bigint[]," \
    "                                 $6::bytea[], $7::text[], $8::text[], $10::boolean[], $11::uuid[], $12::integer[]," \
    "                                 $13::text[], $14::text[], $15::text[])" \
    "   WITH ORDINALITY AS x (req_id, req_generation, req_key, req_access, req_expires, req_refresh," \
    "                         req_fingerprint, req_scopes, req_rotated, req_token, req_lifetime, req_unusable," \
    "                         req_api_base, req_note, req_ord))," \
    " l AS (SELECT id AS l_id FROM integrations WHERE id = ANY ($1::text[]) ORDER BY id FOR UPDATE)," \
    " prev AS (SELECT id AS prev_id, status AS prev_status FROM integrations WHERE id = ANY ($1::text[]))," /* the snapshot: before u */ \
    " u AS (" \
    "  UPDATE integrations i SET key_id = x.req_key, access_token = x.req_access," \
    "    access_expires_at = to_timestamp(x.req_expires), access_lifetime_s = x.req_lifetime," \
    "    refresh_token = x.req_refresh, refresh_fingerprint = x.req_fingerprint, generation = i.generation + 1," \
    "    status = 'active', scopes = COALESCE(string_to_array(x.req_scopes, ' '), i.scopes)," \
    "    api_base_url = COALESCE(x.req_api_base, i.api_base_url)," \
    "    lease_owner = CASE WHEN " STORE_COMMIT_MINE " THEN NULL ELSE i.lease_owner END," \
    "    lease_expires_at = CASE WHEN " STORE_COMMIT_MINE " THEN NULL ELSE i.lease_expires_at END," \
    "    lease_token = CASE WHEN " STORE_COMMIT_MINE " THEN NULL ELSE i.lease_token END," \
    "    last_refresh_at = now()," \
    "    last_error_code = CASE WHEN x.req_unusable IS NOT NULL THEN 'provider_bad_response' END," \
    "    last_error_message = x.req_unusable," \
    "    last_error_at = CASE WHEN x.req_unusable IS NOT NULL THEN now() END, updated_at = now()" \
    "  FROM x WHERE i.id = x.req_id AND i.id IN (SELECT l_id FROM l) AND i.generation = x.req_generation" \
    "    AND (i.status = 'active' OR (i.status = 'needs_reconnect' AND x.req_rotated))" \
    "  RETURNING i.id AS u_id, i.generation AS u_generation, x.req_ord AS u_ord," \
    "    x.req_fingerprint AS u_fingerprint, x.req_rotated AS u_rotated, x.req_unusable AS u_unusable," \
    "    x.req_note AS u_note)," \
    " c AS (" \
    "  INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, rotated, detail)" \
    "  SELECT u.u_id, u.u_generation, $9, 'refreshed', u.u_fingerprint, u.u_rotated," \
    "    NULLIF (concat_ws ('; ', CASE WHEN prev.prev_status = 'needs_reconnect' THEN 'recovered: the invalid_grant" \
    " recorded before was for the refresh token this rotation replaced' END," \
    "      'no usable access token: ' || u.u_unusable, u.u_note), '')" /* 017's trigger reads these words */ \
    "  FROM u JOIN prev ON prev.prev_id = u.u_id RETURNING integration_id, generation)" \
    "SELECT u.u_ord, c.generation FROM c JOIN u ON u.u_id = c.integration_id"

/* The other workers' notifications of a batch's commits ("<worker> <integration>" on
 * STORE_NOTIFY_CHANNEL, each drops that cached entry), sent after the batch's COMMIT in a
 * transaction of its own that does not wait for its WAL flush (store_batch_start_then). Not in the
 * commits' transaction: PostgreSQL serializes the transactions that notify with one lock, taken in
 * their commit and held until the commit has been flushed (and, with a synchronous standby,
 * acknowledged), so every batch of commits of every worker of the deployment waited for the flush
 * of the one before it, and a stalled notifying commit anywhere held up every refresh commit past
 * lock_timeout (docs/performance-history.md, issue 10's twenty-fourth pass). Here the lock is held
 * for the commit of this small transaction alone, never through a flush; a notifying commit stalled
 * elsewhere now holds this transaction, and the connection, for at most lock_timeout, and the
 * batch's answers not at all (they are delivered at its COMMIT: store_batch_start_then). A
 * notification is no more durable than before: a listener that loses its session clears its
 * cache. It is sent for every commit of the batch, won or lost: the statement goes in the same
 * pipeline, before the commits' answers are read, and a lost compare-and-set only costs the other
 * workers one read of a row that changed anyway. The same transaction wakes the event delivery
 * threads (STORE_EVENTS_NOTIFY) when the batch before it wrote an event: the outbox's function
 * marks the session then, a mark that a rollback undoes (migration 015), and this clears it; read
 * first (the materialized w) so that the clearing cannot come before the reading. $1 the
 * integrations (text[], may be empty), $2 the worker's id. */
#define STORE_EVENTS_WRITTEN "ferrule.events_written"
/* The mark, as the outbox's function sets it (migration 015), for a statement that makes
 * deliveries due without it (a test event, a replay). */
#define STORE_EVENTS_MARK "set_config ('" STORE_EVENTS_WRITTEN "', 'on', false)"
#define STORE_NOTIFY_SQL \
    "WITH w AS MATERIALIZED (SELECT current_setting ('" STORE_EVENTS_WRITTEN "', true) = 'on' AS events)" \
    " SELECT set_config ('synchronous_commit', 'off', true)," \
    "  (SELECT count (pg_notify ('" STORE_NOTIFY_CHANNEL "', $2 || ' ' || id)) FROM unnest ($1::text[]) AS id)," \
    "  CASE WHEN w.events THEN pg_notify ('" STORE_EVENTS_NOTIFY "', '') END," \
    "  set_config ('" STORE_EVENTS_WRITTEN "', '', false)" \
    " FROM w"

/* Since when an integration's refresh token has gone unused: its last refresh, or the start of
 * its current grant when none came since (connected_at, migration 011; created_at for grants
 * stored before it). p: the table's alias and a dot, or "". */
#define STORE_IDLE_SINCE_OF(p) \
    "GREATEST (COALESCE (" p "last_refresh_at, " p "created_at), COALESCE (" p "connected_at, " p "created_at))"
#define STORE_IDLE_SINCE STORE_IDLE_SINCE_OF ("")

#endif
