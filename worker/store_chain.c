/* store_chain.c - the refresh protocol's statements on an integration's row and its token chain
 * (docs/architecture.md, "The refresh protocol"): the claim, the commit's compare-and-set and the
 * turn's batch that carries both, a lost compare-and-set recorded, a journal record replayed,
 * failures, leases given back, the sweep's candidates, the generations the cache re-validates,
 * and the chain's history. Transactions are short: the claim locks the row and takes a lease,
 * the provider is called with no transaction open, and the commit is a compare-and-set on the
 * generation. Each runs as a batch on a session of store.c that the loop does not wait for. */
#include "store_chain.h"
#include "store_internal.h"
#include "crypto.h"
#include "ident.h"
#include "text.h"
#include "mem.h"
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A lease token: 128 random bits, so that no two workers ever draw the same one, whatever their
 * pids and start times (every container's worker is pid 1). */
static int
store_new_lease_token (char out [STORE_LEASE_LEN + 1])
{
    unsigned char raw [STORE_LEASE_LEN / 2];
    if (crypto_random_unique (raw, sizeof raw) != 0)
        return -1;
    text_hex (raw, sizeof raw, out);
    return 0;
}

/* Room for one text element of an array literal: every character escaped, quotes and a comma. */
#define CHAIN_TEXT_ROOM(str) (2 * strlen (str) + 4)
#define CHAIN_INT_ROOM 24

/* A batch of claims in flight. */
typedef struct {
    store_t *s;
    store_claim_req_t *reqs;
    size_t n;
    int64_t lease_ms;
    char (*tokens) [STORE_LEASE_LEN + 1];    /* the lease token drawn for each */
    store_claims_fn *done;
    void *arg;
} claims_t;

/* Reads claim q's answer, row r of res. */
static void
claim_read (store_t *s, store_claim_req_t *q, const PGresult *res, int r, const char *token, int64_t lease_ms)
{
    const char *outcome = PQgetvalue (res, r, STORE_CLAIM_OUTCOME_COLUMN);
    memset (&q->row, 0, sizeof q->row);
    q->st = FR_OK;
    q->err [0] = '\0';
    if (strcmp (outcome, "missing") == 0) {
        snprintf (q->err, sizeof q->err, "integration \"%s\" does not exist", q->id);
        q->st = FR_NOT_FOUND;
        return;
    }
    if (strcmp (outcome, "locked") == 0) {
        q->outcome = CLAIM_LOCKED;
        return;
    }
    store_fill_row (res, r, &q->row);
    if (strcmp (outcome, "inactive") == 0)
        q->outcome = CLAIM_INACTIVE;
    else
    if (strcmp (outcome, "fresh") == 0)
        q->outcome = CLAIM_FRESH;
    else
    if (strcmp (outcome, "busy") == 0)
        q->outcome = CLAIM_BUSY;
    else {
        if (q->row.lease_owner && strcmp (q->row.lease_owner, store_worker_id (s)) != 0)
            q->row.interrupted = 1;          /* another worker's lease expired under it */
        mem_free (q->row.lease_owner);
        q->row.lease_owner = mem_strdup (store_worker_id (s));
        snprintf (q->row.lease_token, sizeof q->row.lease_token, "%s", token);
        q->row.lease_ms_left = lease_ms;
        q->outcome = CLAIM_ACQUIRED;
    }
}

/* The claims' answers, res (NULL when the batch failed: st, err), of a transaction that carried
 * in_batch refreshes in all. Each row of res names its claim's place; a claim with no row, or two,
 * is answered as an internal error, never as another's. */
static void
claims_done (claims_t *cl, fr_status_t st, const PGresult *res, size_t in_batch, const char *err)
{
    store_t *s = cl->s;
    /* a batch that failed as a whole while the database is up says nothing of each claim: the
     * caller sends each again on its own, so that one integration's problem stays its own (never
     * here, one by one, with the loop waiting) */
    int undecided = st != FR_OK && in_batch > 1 && store_connected (s);
    int nrows = st == FR_OK && res ? PQntuples (res) : 0;
    int *row_of = mem_alloc (cl->n * sizeof *row_of);     /* the row answering each: -1 none, -2 more */
    for (size_t i = 0; i < cl->n; i++)
        row_of [i] = -1;
    for (int r = 0; r < nrows; r++) {
        int64_t place = store_int_at (res, r, STORE_CLAIM_PLACE_COLUMN);
        if (place >= 1 && (uint64_t) place <= cl->n)
            row_of [place - 1] = row_of [place - 1] == -1 ? r : -2;
    }
    for (size_t i = 0; i < cl->n; i++) {
        store_claim_req_t *q = &cl->reqs [i];
        q->undecided = undecided;
        if (st == FR_OK && row_of [i] >= 0)
            claim_read (s, q, res, row_of [i], cl->tokens [i], cl->lease_ms);
        else {
            q->st = st != FR_OK ? st : FR_INTERNAL;
            snprintf (q->err, sizeof q->err, "%s", st != FR_OK ? err : "the claim returned no single answer");
        }
    }
    mem_free (row_of);
    mem_free (cl->tokens);
    cl->done (cl->arg, cl->reqs, cl->n);
    mem_free (cl);
}

/* The claims' one statement (STORE_CLAIM_SQL) into stmt, its arrays into arrays (the caller
 * destroys them once sent), and their context; NULL with err when no lease token could be drawn. */
static claims_t *
claims_prepare (store_t *s, store_claim_req_t *reqs, size_t n, int64_t lease_ms, store_claims_fn *done, void *arg,
                store_stmt_t *stmt, pgarray_t *arrays [5], char ms [32], const char *values [7], char *err,
                size_t errlen)
{
    claims_t *cl = mem_alloc (sizeof *cl);
    *cl = (claims_t) { s, reqs, n, lease_ms, mem_alloc (n * sizeof *cl->tokens), done, arg };
    size_t id_room = 8;
    for (size_t i = 0; i < n; i++)
        id_room += CHAIN_TEXT_ROOM (reqs [i].id);
    arrays [0] = pgarray_new (id_room);
    arrays [1] = pgarray_new (8 + n * CHAIN_INT_ROOM);
    arrays [2] = pgarray_new (8 + n * CHAIN_INT_ROOM);
    arrays [3] = pgarray_new (8 + n * 8);
    arrays [4] = pgarray_new (8 + n * (STORE_LEASE_LEN + 4));
    for (size_t i = 0; i < n; i++) {
        store_claim_req_t *q = &reqs [i];
        memset (&q->row, 0, sizeof q->row);
        if (store_new_lease_token (cl->tokens [i]) != 0) {
            snprintf (err, errlen, "could not draw a lease token: the random number generator failed");
            mem_free (cl->tokens);
            mem_free (cl);
            return NULL;
        }
        pgarray_add_text (arrays [0], q->id);
        pgarray_add_int (arrays [1], q->known_generation);
        pgarray_add_int (arrays [2], q->valid_until);
        pgarray_add_text (arrays [3], q->forced ? "true" : "false");
        pgarray_add_text (arrays [4], cl->tokens [i]);
    }
    snprintf (ms, 32, "%" PRId64, lease_ms);
    const char *v [] = { pgarray_text (arrays [0]), pgarray_text (arrays [1]), pgarray_text (arrays [2]),
                         pgarray_text (arrays [3]), store_worker_id (s), pgarray_text (arrays [4]), ms };
    memcpy (values, v, sizeof v);
    *stmt = (store_stmt_t) { store_claim_sql, 7, values, NULL, NULL };
    return cl;
}

/* The arrays of a batch's commits (STORE_COMMIT_SQL's parameters, all but $9, the worker's id). */
enum { CA_ID, CA_GEN, CA_KEY, CA_ACCESS, CA_EXPIRES, CA_REFRESH, CA_FINGERPRINT, CA_SCOPES, CA_ROTATED, CA_TOKEN,
       CA_LIFETIME, CA_UNUSABLE, CA_API_BASE, CA_NOTE, CA_COUNT };

static void
commit_arrays (const store_commit_t *const *commits, size_t n, pgarray_t *arrays [CA_COUNT])
{
    size_t room [CA_COUNT];
    for (int k = 0; k < CA_COUNT; k++)
        room [k] = 8;
    for (size_t i = 0; i < n; i++) {
        const store_commit_t *c = commits [i];
        room [CA_ID] += CHAIN_TEXT_ROOM (c->id);
        room [CA_GEN] += CHAIN_INT_ROOM;
        room [CA_KEY] += CHAIN_INT_ROOM;
        room [CA_ACCESS] += 2 * c->access_ct_len + 8;
        room [CA_EXPIRES] += CHAIN_INT_ROOM;
        room [CA_REFRESH] += 2 * c->refresh_ct_len + 8;
        room [CA_FINGERPRINT] += c->refresh_fingerprint ? CHAIN_TEXT_ROOM (c->refresh_fingerprint) : 8;
        room [CA_SCOPES] += c->scopes ? CHAIN_TEXT_ROOM (c->scopes) : 8;
        room [CA_ROTATED] += 8;
        room [CA_TOKEN] += STORE_LEASE_LEN + 4;
        room [CA_LIFETIME] += CHAIN_INT_ROOM;
        room [CA_UNUSABLE] += c->unusable ? CHAIN_TEXT_ROOM (c->unusable) : 8;
        room [CA_API_BASE] += c->api_base_url ? CHAIN_TEXT_ROOM (c->api_base_url) : 8;
        room [CA_NOTE] += c->note ? CHAIN_TEXT_ROOM (c->note) : 8;
    }
    for (int k = 0; k < CA_COUNT; k++)
        arrays [k] = pgarray_new (room [k]);
    for (size_t i = 0; i < n; i++) {
        const store_commit_t *c = commits [i];
        pgarray_add_text (arrays [CA_ID], c->id);
        pgarray_add_int (arrays [CA_GEN], c->expected_generation);
        pgarray_add_int (arrays [CA_KEY], c->key_id);
        pgarray_add_bytea (arrays [CA_ACCESS], c->access_ct, c->access_ct_len);
        pgarray_add_int (arrays [CA_EXPIRES], c->access_expires_at);
        pgarray_add_bytea (arrays [CA_REFRESH], c->refresh_ct, c->refresh_ct_len);
        pgarray_add_text (arrays [CA_FINGERPRINT], c->refresh_fingerprint);    /* NULL: a null */
        pgarray_add_text (arrays [CA_SCOPES], c->scopes);
        pgarray_add_text (arrays [CA_ROTATED], c->rotated ? "true" : "false");
        pgarray_add_text (arrays [CA_TOKEN], c->lease_token [0] ? c->lease_token : NULL);
        if (c->access_lifetime_s > 0)
            pgarray_add_int (arrays [CA_LIFETIME], c->access_lifetime_s);
        else
            pgarray_add_null (arrays [CA_LIFETIME]);
        pgarray_add_text (arrays [CA_UNUSABLE], c->unusable);              /* NULL: a null */
        pgarray_add_text (arrays [CA_API_BASE], c->api_base_url);          /* NULL: keep the stored one */
        pgarray_add_text (arrays [CA_NOTE], c->note);                      /* NULL: a null */
    }
}

/* STORE_COMMIT_SQL's fifteen values from the arrays; 0, or -1 when one would not fit its room
 * (never, as commit_arrays sizes them). */
#define COMMIT_PARAMS 15
static int
commit_values (store_t *s, pgarray_t *const arrays [CA_COUNT], const char *values [COMMIT_PARAMS])
{
    for (int k = 0; k < CA_COUNT; k++)
        if (!pgarray_text (arrays [k]))
            return -1;
    const char *v [] = { pgarray_text (arrays [CA_ID]), pgarray_text (arrays [CA_GEN]), pgarray_text (arrays [CA_KEY]),
                         pgarray_text (arrays [CA_ACCESS]), pgarray_text (arrays [CA_EXPIRES]),
                         pgarray_text (arrays [CA_REFRESH]), pgarray_text (arrays [CA_FINGERPRINT]),
                         pgarray_text (arrays [CA_SCOPES]), store_worker_id (s), pgarray_text (arrays [CA_ROTATED]),
                         pgarray_text (arrays [CA_TOKEN]), pgarray_text (arrays [CA_LIFETIME]),
                         pgarray_text (arrays [CA_UNUSABLE]), pgarray_text (arrays [CA_API_BASE]),
                         pgarray_text (arrays [CA_NOTE]) };
    memcpy (values, v, sizeof v);
    return 0;
}

/* STORE_NOTIFY_SQL for the commits whose arrays commit_values read: their ids and the worker's. */
static store_stmt_t
notify_stmt (store_t *s, pgarray_t *const arrays [CA_COUNT], const char *values [2])
{
    values [0] = pgarray_text (arrays [CA_ID]);
    values [1] = store_worker_id (s);
    return (store_stmt_t) { store_notify_sql, 2, values, NULL, NULL };
}

static void
arrays_destroy (pgarray_t **arrays, size_t n)
{
    for (size_t k = 0; k < n; k++)
        pgarray_destroy (&arrays [k]);
}

/* Which of a commit statement's n commits were written: committed [i] = 1 for each row of res
 * that names place i + 1. */
static void
commits_read (const PGresult *res, int *committed, size_t n)
{
    memset (committed, 0, n * sizeof *committed);
    for (int r = 0; res && r < PQntuples (res); r++) {
        int64_t place = store_int_at (res, r, 0);
        if (place >= 1 && (uint64_t) place <= n)
            committed [place - 1] = 1;
    }
}

/* A lost compare-and-set: a "conflict" chain row, and the lease released if it is still ours. No
 * row when the result is this very commit's, made before its connection was lost and sent again
 * (or a journal record replayed whose marker was lost): the row holds the refresh token it
 * sealed (a fresh nonce makes each sealing its own, rotated or kept), or its rotated token, or
 * the chain already has its "refreshed" row at the generation it made (the row moved on since:
 * a rotated token is this refresh's alone; a kept one could be anyone's). */
#define CONFLICT_SQL \
    "WITH u AS (UPDATE integrations SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL" \
    "  WHERE id = $1 AND lease_owner = $2 AND lease_token = $5::uuid RETURNING id)" \
    "INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, rotated, detail)" \
    " SELECT id, generation, $2, 'conflict', $3, $4::boolean," \
    "  'another refresh, import or status change committed first; this result was not stored'" \
    " FROM integrations WHERE id = $1 AND ($6::bytea IS NULL OR refresh_token IS DISTINCT FROM $6::bytea)" \
    "  AND NOT ($4::boolean AND refresh_fingerprint IS NOT DISTINCT FROM $3)" \
    "  AND NOT ($4::boolean AND EXISTS (SELECT FROM token_chain c WHERE c.integration_id = $1" \
    "   AND c.generation = $7::bigint + 1 AND c.outcome = 'refreshed' AND c.rotated AND c.refresh_fingerprint = $3))" \
    " RETURNING generation"

typedef struct {
    store_conflict_fn *fn;
    void *arg;
    char id [IDENT_MAX + 1];
} conflict_ctx_t;

static void
conflict_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    conflict_ctx_t *c = arg;
    store_row_t row;
    char why [256];
    memset (&row, 0, sizeof row);
    if (st == FR_OK && (n != 2 || PQntuples (results [1]) != 1)) {
        st = store_not_found (c->id, why, sizeof why);
        err = why;
    }
    if (st == FR_OK)
        store_fill_row (results [1], 0, &row);
    c->fn (c->arg, st, st == FR_OK ? &row : NULL, st == FR_OK ? NULL : err);
    store_row_clear (&row);
}

fr_status_t
store_conflict_start (store_t *s, const store_commit_t *cm, store_conflict_fn *fn, void *arg, char *err,
                      size_t errlen)
{
    char generation [24];
    snprintf (generation, sizeof generation, "%" PRId64, cm->expected_generation);
    const char *v2 [] = { cm->id, store_worker_id (s), cm->refresh_fingerprint, cm->rotated ? "true" : "false",
                          cm->lease_token [0] ? cm->lease_token : NULL, (const char *) cm->refresh_ct, generation };
    const int lengths [] = { 0, 0, 0, 0, 0, (int) cm->refresh_ct_len, 0 };
    const int formats [] = { 0, 0, 0, 0, 0, 1, 0 };          /* the sealed token as bytes */
    store_stmt_t stmts [] = {
        { CONFLICT_SQL, 7, v2, lengths, formats },
        { "SELECT " STORE_ROW_COLUMNS " FROM integrations WHERE id = $1", 1, v2, NULL, NULL },
    };
    conflict_ctx_t c = { fn, arg, "" };
    snprintf (c.id, sizeof c.id, "%s", cm->id);
    return store_batch_start (s, stmts, 2, conflict_done, &c, sizeof c, err, errlen);
}

/* STORE_HOLD_SQL's statement: id's lease under token for ms while its row is before generation
 * below; its values in a, which must live until the statement is sent. */
typedef struct {
    char below [24], ms [24];
    const char *values [5];
} hold_args_t;

static store_stmt_t
hold_stmt (store_t *s, const char *id, int64_t below, const char *token, int64_t ms, hold_args_t *a)
{
    snprintf (a->below, sizeof a->below, "%" PRId64, below);
    snprintf (a->ms, sizeof a->ms, "%" PRId64, ms);
    a->values [0] = id;
    a->values [1] = a->below;
    a->values [2] = store_worker_id (s);
    a->values [3] = token;
    a->values [4] = a->ms;
    return (store_stmt_t) { STORE_HOLD_SQL, 5, a->values, NULL, NULL };
}

/* A journal record's replay: its compare-and-set, then the row as that transaction left it. */
typedef struct {
    store_replayed_fn *fn;
    void *arg;
    int64_t expected;
    char fingerprint [128];            /* the record's; a longer one never counts as settled */
} replay_ctx_t;

static void
replay_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    replay_ctx_t *c = arg;
    store_replay_t outcome = STORE_REPLAY_LOST;
    int64_t generation = -1;
    if (st == FR_OK && n >= 2) {
        const PGresult *row = results [n - 1];     /* after the hold, when there is one */
        if (PQntuples (row) == 1)
            generation = store_int_at (row, 0, 0);
        if (PQntuples (results [0]) == 1)
            outcome = STORE_REPLAY_COMMITTED;
        else
        if (generation > c->expected && c->fingerprint [0] && !PQgetisnull (row, 0, 1)
            && strcmp (PQgetvalue (row, 0, 1), c->fingerprint) == 0)
            outcome = STORE_REPLAY_SETTLED;  /* the same token committed before the crash */
        else
        if (generation >= 0 && generation < c->expected)
            outcome = STORE_REPLAY_BEHIND;
    }
    c->fn (c->arg, st, outcome, generation, st == FR_OK ? NULL : err);
}

fr_status_t
store_replay_start (store_t *s, const store_commit_t *cm, int64_t hold_ms, store_replayed_fn *fn, void *arg, char *err,
                    size_t errlen)
{
    pgarray_t *arrays [CA_COUNT];
    const char *values [COMMIT_PARAMS];
    const store_commit_t *one [1] = { cm };
    commit_arrays (one, 1, arrays);
    fr_status_t st = FR_INTERNAL;
    if (commit_values (s, arrays, values) != 0)
        snprintf (err, errlen, "the journal record of \"%s\" is too large to send", cm->id);
    else {
        const char *ids [] = { cm->id };
        hold_args_t hold;
        /* the hold after the compare-and-set, in its transaction: taken only when the row is found
         * behind, with no moment between the finding and the hold */
        int held = hold_ms > 0 && cm->lease_token [0];
        store_stmt_t stmts [] = {
            { store_commit_sql, COMMIT_PARAMS, values, NULL, NULL },
            hold_stmt (s, cm->id, cm->expected_generation, cm->lease_token, hold_ms, &hold),
            { "SELECT generation, refresh_fingerprint FROM integrations WHERE id = $1", 1, ids, NULL, NULL },
        };
        if (!held)
            stmts [1] = stmts [2];
        replay_ctx_t c = { fn, arg, cm->expected_generation, "" };
        if (cm->refresh_fingerprint && strlen (cm->refresh_fingerprint) < sizeof c.fingerprint)
            memcpy (c.fingerprint, cm->refresh_fingerprint, strlen (cm->refresh_fingerprint) + 1);
        const char *nvalues [2];
        store_stmt_t notify = notify_stmt (s, arrays, nvalues);
        st = store_batch_start_then (s, stmts, held ? 3 : 2, &notify, STORE_NOTIFY_FAILURE, replay_done, &c, sizeof c,
                                     err, errlen);
    }
    arrays_destroy (arrays, CA_COUNT);           /* sent: libpq has copied them */
    return st;
}

/* A turn's batch: the generic plans' setting (STORE_GENERIC_PLANS_SQL), its commits' statement, then
 * its claims'. */
typedef struct {
    size_t nc, nq;                   /* commits and claims */
    store_commits_fn *commits_done;
    void *commits_arg;
    claims_t *cl;
} turn_t;

static void
turn_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    turn_t *t = arg;
    size_t k = 1;                        /* results [0]: the generic plans' setting */
    if (t->nc) {
        int *committed = mem_alloc (t->nc * sizeof *committed);
        if (st == FR_OK)
            commits_read (k < n ? results [k] : NULL, committed, t->nc);
        k++;
        t->commits_done (t->commits_arg, st, committed, t->nc, err);
        mem_free (committed);
    }
    if (t->cl)
        claims_done (t->cl, st, k < n ? results [k] : NULL, t->nc + t->nq, err);
}

fr_status_t
store_turn_start (store_t *s, const store_commit_t *const *commits, size_t nc, store_commits_fn *commits_done_fn,
                  void *commits_arg, store_claim_req_t *reqs, size_t nq, int64_t lease_ms,
                  store_claims_fn *claims_done_fn, void *claims_arg, char *err, size_t errlen)
{
    fr_status_t st = FR_OK;
    store_stmt_t stmts [3] = { { store_generic_plans_sql, 0, NULL, NULL, NULL } };
    size_t ns = 1;
    pgarray_t *carrays [CA_COUNT] = { NULL }, *qarrays [5] = { NULL };
    const char *cvalues [COMMIT_PARAMS], *qvalues [7], *nvalues [2];
    store_stmt_t notify = { NULL, 0, NULL, NULL, NULL };
    char ms [32];
    turn_t t = { nc, nq, commits_done_fn, commits_arg, NULL };
    if (nc) {
        commit_arrays (commits, nc, carrays);
        if (commit_values (s, carrays, cvalues) != 0) {
            snprintf (err, errlen, "%zu commits are too large to send in one batch", nc);
            st = FR_INTERNAL;
        }
        else {
            stmts [ns++] = (store_stmt_t) { store_commit_sql, COMMIT_PARAMS, cvalues, NULL, NULL };
            notify = notify_stmt (s, carrays, nvalues);
        }
    }
    if (st == FR_OK && nq) {
        if (!(t.cl = claims_prepare (s, reqs, nq, lease_ms, claims_done_fn, claims_arg, &stmts [ns], qarrays, ms,
                                     qvalues, err, errlen)))
            st = FR_INTERNAL;
        else
        if (!qvalues [0] || !qvalues [1] || !qvalues [2] || !qvalues [3] || !qvalues [5]) {
            snprintf (err, errlen, "%zu claims are too large to send in one batch", nq);
            st = FR_INTERNAL;
        }
        else
            ns++;
    }
    if (st == FR_OK)
        st = store_batch_start_then (s, stmts, ns, nc ? &notify : NULL, STORE_NOTIFY_FAILURE, turn_done, &t, sizeof t,
                                     err, errlen);
    arrays_destroy (carrays, CA_COUNT);         /* sent: libpq has copied them */
    arrays_destroy (qarrays, 5);
    if (st != FR_OK && t.cl) {
        mem_free (t.cl->tokens);
        mem_free (t.cl);
    }
    return st;
}

typedef struct {
    store_failure_fn *fn;
    void *arg;
    char id [IDENT_MAX + 1];
} failure_ctx_t;

static void
failure_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    failure_ctx_t *c = arg;
    char why [256];
    int stale = 0;
    if (st == FR_OK && (n != 1 || PQntuples (results [0]) == 0)) {
        st = store_not_found (c->id, why, sizeof why);
        err = why;
    }
    else
    if (st == FR_OK)
        stale = strcmp (PQgetvalue (results [0], 0, 0), "t") != 0;
    c->fn (c->arg, st, stale, st == FR_OK ? NULL : err);
}

fr_status_t
store_record_failure_start (store_t *s, const store_failure_t *f, store_failure_fn *fn, void *arg, char *err,
                            size_t errlen)
{
    char gen [32];
    snprintf (gen, sizeof gen, "%" PRId64, f->expected_generation);
    /* The status and last error change only when the failure is about the current generation:
     * an invalid_grant for a refresh token someone already replaced says nothing of the new one.
     * The chain row is the failed token's generation's ($2), whatever the row's is now: at the
     * current one, a stale failure read as the live token's (and made its next refresh a
     * "recovered" event).
     * The lease is released only if it is still this refresh's (owner and token). */
    const char *values [] = { f->id, gen, f->lease_token && *f->lease_token ? f->lease_token : NULL, f->new_status,
                              f->error_code, f->error_message, store_worker_id (s), f->outcome, f->fingerprint };
    store_stmt_t stmt = {
        "WITH cur AS (SELECT generation = $2::bigint AS current,"
        "               (lease_owner = $7 AND lease_token = $3::uuid) IS TRUE AS mine"
        "             FROM integrations WHERE id = $1 FOR UPDATE),"
        " u AS ("
        "  UPDATE integrations i SET"
        "    status = CASE WHEN cur.current AND $4::text IS NOT NULL THEN $4::text ELSE i.status END,"
        "    last_error_code = CASE WHEN cur.current THEN $5 ELSE i.last_error_code END,"
        "    last_error_message = CASE WHEN cur.current THEN $6 ELSE i.last_error_message END,"
        "    last_error_at = CASE WHEN cur.current THEN now() ELSE i.last_error_at END,"
        "    lease_owner = CASE WHEN cur.mine THEN NULL ELSE i.lease_owner END,"
        "    lease_expires_at = CASE WHEN cur.mine THEN NULL ELSE i.lease_expires_at END,"
        "    lease_token = CASE WHEN cur.mine THEN NULL ELSE i.lease_token END,"
        "    updated_at = now()"
        "  FROM cur WHERE i.id = $1 RETURNING i.generation, cur.current),"
        " c AS ("
        "  INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, detail)"
        "  SELECT $1, $2::bigint, $7, $8, $9, $6 FROM u RETURNING generation)"
        "SELECT u.current FROM u, c",
        9, values, NULL, NULL };
    failure_ctx_t c = { fn, arg, "" };
    snprintf (c.id, sizeof c.id, "%s", f->id);
    const char *ids [] = { f->id };
    return store_batch_start_notify (s, &stmt, 1, ids, 1, failure_done, &c, sizeof c, err, errlen);
}

fr_status_t
store_hold_start (store_t *s, const char *id, int64_t below, const char *lease_token, int64_t hold_ms,
                  store_done_fn *fn, void *arg, char *err, size_t errlen)
{
    hold_args_t hold;
    store_stmt_t stmt = hold_stmt (s, id, below, lease_token, hold_ms, &hold);
    return store_batch_start_done (s, &stmt, 1, fn, arg, err, errlen);
}

fr_status_t
store_release_lease_start (store_t *s, const char *id, const char *lease_token, store_done_fn *fn, void *arg,
                           char *err, size_t errlen)
{
    const char *values [] = { id, store_worker_id (s), lease_token };
    store_stmt_t stmt = { "UPDATE integrations SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL"
                          " WHERE id = $1 AND lease_owner = $2 AND lease_token = $3::uuid RETURNING id",
                          3, values, NULL, NULL };
    return store_batch_start_done (s, &stmt, 1, fn, arg, err, errlen);
}

/* Copies a result's first two columns into two arrays of strings. */
static void
store_take_pairs (const PGresult *res, char ***a, char ***b, size_t *count)
{
    int n = PQntuples (res);
    *a = mem_alloc ((size_t) (n ? n : 1) * sizeof **a);
    *b = mem_alloc ((size_t) (n ? n : 1) * sizeof **b);
    for (int i = 0; i < n; i++) {
        (*a) [i] = mem_strdup (PQgetvalue (res, i, 0));
        (*b) [i] = mem_strdup (PQgetvalue (res, i, 1));
    }
    *count = (size_t) n;
}

/* An earlier run's leases released: the ids and providers of the rows released. */
typedef struct {
    store_released_fn *fn;
    void *arg;
} released_ctx_t;

static void
released_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    released_ctx_t *c = arg;
    char **ids = NULL, **providers = NULL;
    size_t count = 0;
    int64_t blocks = 0;
    if (st == FR_OK && n == 2 && PQntuples (results [1]) == 1) {
        store_take_pairs (results [0], &ids, &providers, &count);
        blocks = store_int_at (results [1], 0, 0);
    }
    else if (st == FR_OK) {
        st = FR_INTERNAL;
        err = "the release's batch returned no size of the table";
    }
    c->fn (c->arg, st, ids, providers, count, blocks, st == FR_OK ? NULL : err);
}

fr_status_t
store_release_own_leases_start (store_t *s, int64_t from, int64_t count, const char *const *held, size_t nheld,
                                store_released_fn *fn, void *arg, char *err, size_t errlen)
{
    char lo [40], hi [40];
    snprintf (lo, sizeof lo, "(%" PRId64 ",0)", from);
    snprintf (hi, sizeof hi, "(%" PRId64 ",0)", from + count);
    pgarray_t *except = store_id_array (held, nheld);
    if (!pgarray_text (except)) {
        pgarray_destroy (&except);
        snprintf (err, errlen, "too many held leases (%zu) to keep out of the release", nheld);
        return FR_TOO_LARGE;
    }
    const char *values [] = { store_worker_id (s), lo, hi, pgarray_text (except) };
    /* a range of the table's blocks (a TID range scan): a row leased by this worker id is claimed
     * by no one else until its lease expires, so it stays where the walk will find it. Only a
     * reconnect, a disconnect or the route-hash fill of that very row during the walk could move
     * it behind the walk: its lease then runs out instead, and the interruption goes unrecorded,
     * which a new grant or a disconnect makes moot anyway */
    store_stmt_t stmts [] = {
        { "WITH u AS (UPDATE integrations SET lease_owner = NULL, lease_token = NULL, lease_id = NULL,"
          "    lease_expires_at = NULL, interrupted_generation = generation"
          "  WHERE ctid >= $2::tid AND ctid < $3::tid AND lease_owner = $1 AND id <> ALL ($4::text[])"
          "  RETURNING id, provider, generation),"
          " c AS (INSERT INTO token_chain (integration_id, generation, worker, outcome, detail)"
          "  SELECT id, generation, $1, 'interrupted', 'worker \"' || $1 || '\" stopped during this refresh and"
          " found its lease when it started again: if the provider call had gone out, the provider may have rotated"
          " the refresh token' FROM u)"
          "SELECT id, provider FROM u",
          4, values, NULL, NULL },
        { "SELECT pg_relation_size ('integrations') / current_setting ('block_size')::bigint", 0, NULL, NULL, NULL },
    };
    released_ctx_t c = { fn, arg };
    fr_status_t st = store_batch_start (s, stmts, 2, released_done, &c, sizeof c, err, errlen);
    pgarray_destroy (&except);              /* sent: libpq has copied it */
    return st;
}

/* The sweep's queries. Both read the expiry index (integrations_refreshable_expiry, migration 012,
 * which holds only the rows with a refresh token: "refresh_token IS NOT NULL" below is what lets
 * the planner use it) in order and stop
 * at the page's end or at a bound the index can use, never the whole table: a pass runs every
 * few seconds on every worker, and with millions of rows a full scan per query would make the
 * sweep the database's main load. Their common conditions use $1 to $5:
 *   - a row whose refresh failed lately waits out its backoff ($1 ms): kept in, the oldest
 *     expiries (which failing rows keep) would fill every page, and nothing behind them would
 *     ever be swept;
 *   - the worker's own partitions: the routing hash's unsigned value modulo the partition count
 *     ($2; $3 is 2^64 modulo it, for the hashes a bigint holds as negative; $4 the partitions
 *     owned); a row without its hash yet is everyone's (each worker keeps its own share, and
 *     fills the hash in);
 *   - $5: the page;
 *   - $9: providers left out, their circuit open: refused without a try, their rows would keep
 *     no failure and fill every page until it closes;
 *   - $10: integrations left out, held back by this worker past $1 (a provider's Retry-After may
 *     ask for longer than the longest backoff): kept in, they would fill every page the same way. */
#define SWEEP_ROWS_OF_MINE \
    " AND refresh_token IS NOT NULL" \
    " AND (lease_expires_at IS NULL OR lease_expires_at < clock_timestamp())" \
    " AND (last_error_at IS NULL OR last_error_at < now() - $1::bigint * interval '1 millisecond')" \
    " AND ($2::bigint IS NULL OR route_hash IS NULL" \
    "      OR (CASE WHEN route_hash >= 0 THEN route_hash % $2::bigint" \
    "          ELSE (route_hash % $2::bigint + $2::bigint + $3::bigint) % $2::bigint END)::integer = ANY ($4::integer[]))" \
    " AND provider <> ALL ($9::text[])" \
    " AND id <> ALL ($10::text[])"

/* Expiring tokens, each by its own horizon: the global one ($6), but no more than a share ($7) of
 * the token's lifetime (a 120 s token is not refreshed every pass of a 300 s horizon) and no less
 * than the floor ($8: one sweep interval and a margin, so that a pass always comes before expiry),
 * and never more than half the lifetime. Since no row's horizon exceeds the global one, that
 * bounds the index scan; rows with no expiry (a refresh token imported alone) come first. */
static const char sweep_due_sql [] =
    "SELECT id, provider, route_hash FROM ("
    " (SELECT id, provider, route_hash, access_expires_at FROM integrations"
    "   WHERE status = 'active' AND access_expires_at IS NULL" SWEEP_ROWS_OF_MINE
    "   LIMIT $5::bigint)"
    " UNION ALL"
    " (SELECT id, provider, route_hash, access_expires_at FROM integrations"
    "   WHERE status = 'active' AND access_expires_at < now() + interval '1 second' * $6::bigint"
    "     AND access_expires_at < now() + interval '1 second' *"
    "       CASE WHEN COALESCE(access_lifetime_s, 0) <= 0 THEN $6::bigint"
    "            ELSE LEAST($6::bigint, access_lifetime_s / 2,"
    "                       GREATEST(access_lifetime_s * $7::float8, $8::bigint)) END"
    SWEEP_ROWS_OF_MINE
    "   ORDER BY access_expires_at LIMIT $5::bigint)"
    ") u ORDER BY access_expires_at NULLS FIRST LIMIT $5::bigint";

/* Refresh tokens of the providers $7 not refreshed for their $8 seconds each (they expire
 * unused ones), among the $5 rows after the id $6. No index serves the last refresh (one would
 * cost every refresh's commit an entry): the sweep walks the table through the primary key, a
 * chunk a pass, instead of reading all of it at once. The last row answers where the next chunk
 * starts: the chunk's last id, or "" once the walk has reached the end. */
static const char sweep_idle_sql [] =
    /* the chunk, read in the primary key's order up to its size (so never more, whatever the
     * planner's estimates), with what the conditions need; the refresh token as NULL or true
     * rather than copied */
    "WITH chunk AS (SELECT id, provider, route_hash, status, " STORE_IDLE_SINCE " AS idle_since, lease_expires_at,"
    "   last_error_at, CASE WHEN refresh_token IS NOT NULL THEN true END AS refresh_token"
    "   FROM integrations WHERE id > $6 ORDER BY id LIMIT $5::bigint)"
    " SELECT id, provider, route_hash, NULL FROM chunk"
    "   JOIN unnest ($7::text[], $8::bigint[]) AS l (idle_provider, idle_s) ON idle_provider = provider"
    "  WHERE status = 'active' AND idle_since < now() - idle_s * interval '1 second'"
    SWEEP_ROWS_OF_MINE
    " UNION ALL"
    " SELECT NULL, NULL, NULL, CASE WHEN count(*) < $5::bigint THEN '' ELSE max (id) END FROM chunk";

typedef struct {
    store_candidate_fn *fn;
    void *arg;
    char *next_cursor;              /* of the idle query (a pass has at most one) */
} sweep_ctx_t;

static void
sweep_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    sweep_ctx_t *c = arg;
    for (size_t q = 0; st == FR_OK && q < n; q++)
        for (int i = 0; results [q] && i < PQntuples (results [q]); i++) {
            if (PQnfields (results [q]) > 3 && !PQgetisnull (results [q], i, 3)) {
                /* the idle query's cursor row */
                if (c->next_cursor)
                    snprintf (c->next_cursor, STORE_CURSOR_LEN, "%s", PQgetvalue (results [q], i, 3));
                continue;
            }
            c->fn (c->arg, FR_OK, q, PQgetvalue (results [q], i, 0), PQgetvalue (results [q], i, 1),
                   PQgetisnull (results [q], i, 2), NULL);
        }
    c->fn (c->arg, st, n, NULL, NULL, 0, st == FR_OK ? NULL : err);
}

/* Room for n partition numbers (at most RING_MAX_PARTITIONS, 5 digits), the commas and braces. */
#define STORE_PARTITIONS_MAX(n) ((n) * 11 + 8)

fr_status_t
store_sweep_start (store_t *s, const store_sweep_query_t *qs, size_t n, store_candidate_fn *fn, void *arg,
                   char *err, size_t errlen)
{
    struct sweep_params {
        char horizon [32], lim [32], share [32], floor [32], quiet [32], parts [16], wrap [16];
        const char *values [10];
        pgarray_t *owned;                 /* NULL: none, or the same partitions as the query before */
        pgarray_t *providers, *idle_s, *blocked, *held;
    } *p = mem_alloc (n * sizeof *p);
    store_stmt_t *stmts = mem_alloc (n * sizeof *stmts);
    const char *owned = NULL;
    sweep_ctx_t c = { fn, arg, NULL };
    fr_status_t st = FR_OK;
    for (size_t i = 0; i < n; i++) {
        snprintf (p [i].horizon, sizeof p [i].horizon, "%" PRId64, qs [i].horizon_s);
        snprintf (p [i].lim, sizeof p [i].lim, "%" PRId64, qs [i].limit);
        snprintf (p [i].share, sizeof p [i].share, "%.4f", qs [i].lifetime_share);
        snprintf (p [i].floor, sizeof p [i].floor, "%" PRId64, qs [i].floor_s);
        snprintf (p [i].quiet, sizeof p [i].quiet, "%" PRId64, qs [i].quiet_ms);
        snprintf (p [i].parts, sizeof p [i].parts, "%" PRIu32, qs [i].partitions);
        snprintf (p [i].wrap, sizeof p [i].wrap, "%" PRIu64,
                  qs [i].partitions ? (UINT64_MAX % qs [i].partitions + 1) % qs [i].partitions : 0);
        /* a pass's queries share one set of partitions: its literal is made once */
        if (!qs [i].owned)
            owned = NULL;
        else if (!i || qs [i].owned != qs [i - 1].owned || qs [i].nowned != qs [i - 1].nowned) {
            p [i].owned = pgarray_new (STORE_PARTITIONS_MAX (qs [i].nowned));
            for (size_t k = 0; k < qs [i].nowned; k++)
                pgarray_add_int (p [i].owned, qs [i].owned [k]);
            owned = pgarray_text (p [i].owned);     /* NULL cannot happen: every partition is read then */
        }
        int all = !qs [i].partitions || !owned;
        if (qs [i].nidle) {
            /* provider names are catalog keys (checked when the catalog is read) */
            p [i].providers = pgarray_new (qs [i].nidle * 134 + 8);
            p [i].idle_s = pgarray_new (qs [i].nidle * 21 + 8);
            for (size_t k = 0; k < qs [i].nidle; k++) {
                pgarray_add_text (p [i].providers, qs [i].idle_providers [k]);
                pgarray_add_int (p [i].idle_s, qs [i].idle_s [k]);
            }
            if (!pgarray_text (p [i].providers) || !pgarray_text (p [i].idle_s)) {
                snprintf (err, errlen, "the sweep's provider names are too long");
                st = FR_TOO_LARGE;
                goto out;
            }
            c.next_cursor = qs [i].next_cursor;
        }
        p [i].blocked = pgarray_new (qs [i].nblocked * 134 + 8);
        for (size_t k = 0; k < qs [i].nblocked; k++)
            pgarray_add_text (p [i].blocked, qs [i].blocked [k]);
        if (!pgarray_text (p [i].blocked)) {
            snprintf (err, errlen, "the sweep's provider names are too long");
            st = FR_TOO_LARGE;
            goto out;
        }
        /* integration ids are checked identifiers: no quoting beyond the array's own */
        p [i].held = pgarray_new (qs [i].nheld * (IDENT_MAX + 6) + 8);
        for (size_t k = 0; k < qs [i].nheld; k++)
            pgarray_add_text (p [i].held, qs [i].held [k]);
        if (!pgarray_text (p [i].held)) {
            snprintf (err, errlen, "the sweep's list of integrations held back is too long");
            st = FR_TOO_LARGE;
            goto out;
        }
        const char *values [] = { p [i].quiet, all ? NULL : p [i].parts, p [i].wrap, all ? NULL : owned, p [i].lim,
                                  qs [i].nidle ? qs [i].cursor : p [i].horizon,
                                  qs [i].nidle ? pgarray_text (p [i].providers) : p [i].share,
                                  qs [i].nidle ? pgarray_text (p [i].idle_s) : p [i].floor,
                                  pgarray_text (p [i].blocked), pgarray_text (p [i].held) };
        memcpy (p [i].values, values, sizeof values);
        stmts [i] = (store_stmt_t) { qs [i].nidle ? sweep_idle_sql : sweep_due_sql, 10, p [i].values, NULL, NULL };
    }
    /* libpq has copied the parameters once the statements are sent */
    st = store_batch_start (s, stmts, n, sweep_done, &c, sizeof c, err, errlen);
out:
    for (size_t i = 0; i < n; i++) {
        pgarray_destroy (&p [i].owned);
        pgarray_destroy (&p [i].providers);
        pgarray_destroy (&p [i].idle_s);
        pgarray_destroy (&p [i].blocked);
        pgarray_destroy (&p [i].held);
    }
    mem_free (stmts);
    mem_free (p);
    return st;
}

/* Routing hashes filled in for rows made before migration 009 (their ids given); rows another
 * session holds are skipped (the caller tries them again), and the count filled is reported. */
typedef struct {
    store_filled_fn *fn;
    void *arg;
} fill_ctx_t;

static void
fill_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    fill_ctx_t *c = arg;
    c->fn (c->arg, st, st == FR_OK && n == 1 && results [0] ? (size_t) PQntuples (results [0]) : 0, err);
}

fr_status_t
store_route_hashes_start (store_t *s, const char *const *ids, size_t n, store_filled_fn *fn, void *arg, char *err,
                          size_t errlen)
{
    pgarray_t *idb = store_id_array (ids, n);
    pgarray_t *hb = pgarray_new (n * 22 + 8);            /* signed 64-bit decimals, commas, braces */
    fr_status_t st = FR_TOO_LARGE;
    for (size_t i = 0; i < n; i++)
        pgarray_add_int (hb, store_route_hash (ids [i]));
    if (!pgarray_text (idb) || !pgarray_text (hb))
        snprintf (err, errlen, "too many integrations to fill in at once");
    else {
        const char *values [] = { pgarray_text (idb), pgarray_text (hb) };
        store_stmt_t stmt = {
            "WITH t AS (SELECT i.id, v.h FROM integrations i JOIN unnest ($1::text[], $2::bigint[]) AS v (id, h)"
            "  ON i.id = v.id WHERE i.route_hash IS NULL FOR UPDATE OF i SKIP LOCKED)"
            " UPDATE integrations SET route_hash = t.h FROM t WHERE integrations.id = t.id RETURNING integrations.id",
            2, values, NULL, NULL };
        fill_ctx_t c = { fn, arg };
        st = store_batch_start (s, &stmt, 1, fill_done, &c, sizeof c, err, errlen);
    }
    pgarray_destroy (&idb);              /* sent: libpq has copied them */
    pgarray_destroy (&hb);
    return st;
}

/* The cache's re-validation (worker.c) and the check after a failover (failover.c): generation,
 * status and refresh token's fingerprint of the ids given. */
typedef struct {
    store_generation_fn *fn;
    void *arg;
} generations_ctx_t;

static void
generations_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    generations_ctx_t *c = arg;
    for (int i = 0; st == FR_OK && n == 1 && results [0] && i < PQntuples (results [0]); i++)
        c->fn (c->arg, FR_OK, PQgetvalue (results [0], i, 0), store_int_at (results [0], i, 1),
               PQgetvalue (results [0], i, 2), PQgetisnull (results [0], i, 3) ? NULL : PQgetvalue (results [0], i, 3),
               NULL);
    c->fn (c->arg, st, NULL, 0, NULL, NULL, st == FR_OK ? NULL : err);
}
fr_status_t
store_generations_start (store_t *s, const char *const *ids, size_t n, store_generation_fn *fn, void *arg,
                         char *err, size_t errlen)
{
    generations_ctx_t c = { fn, arg };
    return store_ids_batch_start (s, "SELECT id, generation, status, refresh_fingerprint FROM integrations"
                                  " WHERE id = ANY ($1::text[])", ids, n, generations_done, &c, sizeof c, "read", err,
                                  errlen);
}

/* The chain rows of a STORE_HISTORY_SQL result. */
store_chain_t *
store_history_read (const PGresult *res, size_t *count)
{
    int n = PQntuples (res);
    store_chain_t *rows = mem_alloc ((size_t) (n ? n : 1) * sizeof *rows);
    for (int i = 0; i < n; i++) {
        store_chain_t *r = &rows [i];
        r->generation = store_int_at (res, i, 0);
        r->at = store_int_at (res, i, 1);
        r->outcome = store_text_at (res, i, 2);
        r->worker = store_text_at (res, i, 3);
        r->refresh_fingerprint = store_text_at (res, i, 4);
        r->rotated = strcmp (PQgetvalue (res, i, 5), "t") == 0;
        r->detail = store_text_at (res, i, 6);
    }
    *count = (size_t) n;
    return rows;
}

typedef struct {
    store_history_fn *fn;
    void *arg;
} history_ctx_t;

static void
history_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    history_ctx_t *c = arg;
    store_chain_t *rows = NULL;
    size_t count = 0;
    if (st == FR_OK && n == 1 && results [0])
        rows = store_history_read (results [0], &count);
    c->fn (c->arg, st, rows, count, st == FR_OK ? NULL : err);
}

fr_status_t
store_history_start (store_t *s, const char *id, int64_t limit, store_history_fn *fn, void *arg, char *err,
                     size_t errlen)
{
    char lim [32];
    snprintf (lim, sizeof lim, "%" PRId64, limit);
    const char *values [] = { id, lim };
    store_stmt_t stmt = { STORE_HISTORY_SQL, 2, values, NULL, NULL };
    history_ctx_t c = { fn, arg };
    return store_batch_start (s, &stmt, 1, history_done, &c, sizeof c, err, errlen);
}

void
store_chain_free (store_chain_t **rows, size_t count)
{
    if (!rows || !*rows)
        return;
    for (size_t i = 0; i < count; i++) {
        mem_free ((*rows) [i].outcome);
        mem_free ((*rows) [i].worker);
        mem_free ((*rows) [i].refresh_fingerprint);
        mem_free ((*rows) [i].detail);
    }
    mem_free (*rows);
    *rows = NULL;
}

