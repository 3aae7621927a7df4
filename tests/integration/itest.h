/* itest.h - small helpers shared by the integration tests (on top of harness.h).
 *
 * Time in these tests. Every test runs twice in CI, once under AddressSanitizer, on two CPUs that
 * the suite itself keeps busy: a step that takes 0.2 s on an idle machine can take 1 s there.
 * So a test waits for what it means (polls for the row, the log line, the counter, with a deadline
 * of many seconds) rather than sleeping and looking; times the service over a client connected
 * beforehand (itest_cached_hits), never a whole ferrulectl run, whose start is most of it under
 * the sanitizers; and where it must act inside a window the service keeps open (a backoff, a
 * provider's latency, a lease), makes that window ten times what the work inside it took in an
 * idle ASan run. A bound on how long something took sits well above the passing time and well
 * below what the bug it guards against took. */
#ifndef FERRULE_ITEST_H
#define FERRULE_ITEST_H
#include <jansson.h>
#include "mem.h"
#include <zmq.h>
#include "harness.h"

/* Stops every process (each must exit 0 on SIGTERM: a clean drain, and under ASan no leak) and
 * destroys the harness; 0 when all stopped cleanly, -1 otherwise (a cmocka teardown result). */
int itest_teardown (harness_t **h);
/* Changes settings of a provider at the fake provider (PUT /admin/providers/P); takes settings.
 * Fails the running cmocka test when the fake provider refuses. */
void itest_fake_config (harness_t *h, const char *provider, json_t *settings);
/* Lets every call the fake provider holds (its latency, an answer delay, a slow fault) be answered
 * now (POST /admin/release): a window held open by a long latency need not be waited out once the
 * test has seen what it needed. Fails the running cmocka test when the fake provider refuses. */
void itest_fake_release (harness_t *h);
/* The user removes the app's access at the fake provider: an RFC 7009 revocation of access_token
 * at provider's /revoke (HTTP Basic, the harness's client), which ends its whole grant. Fails the
 * running cmocka test unless the fake provider answers 200. */
void itest_fake_revoke (harness_t *h, const char *provider, const char *access_token);
/* Creates a grant at the fake provider and returns its refresh token (caller frees). */
char *itest_grant (harness_t *h, const char *provider, const char *scopes_json);
/* Imports an integration through ferrulectl; returns ferrulectl's exit code. */
int itest_import (harness_t *h, const char *id, const char *provider, const char *refresh_token);
/* Makes the stored access token expired and tells every worker's cache (as a change would), then
 * waits a moment for the workers to read the notification. */
void itest_expire (harness_t *h, const char *id);
/* Asks sql (one integer) every 100 ms until it answers want or timeout_ms pass; returns the last
 * answer. */
long long itest_wait_sql (harness_t *h, const char *sql, long long want, int timeout_ms);
/* The scopes of the grant an access token belongs to, as the fake provider's /P/api/me tells
 * them, joined by spaces (caller frees); NULL when the provider does not take the token. Tells
 * whose tokens a reply carries, when each integration holds a grant of scopes of its own. */
char *itest_token_scopes (harness_t *h, const char *provider, const char *access_token);
/* A counter from the fake provider's /admin/stats for a provider, e.g. "refresh_calls". */
long long itest_stat (harness_t *h, const char *provider, const char *counter);
/* Asks for that counter until it reaches at least want or timeout_ms pass; returns the last value.
 * For what a child process or a worker does in the background: a fixed number of tries is a
 * budget a loaded machine overruns (under ASan a ferrulectl start alone can take a second). */
long long itest_wait_stat (harness_t *h, const char *provider, const char *counter, long long want, int timeout_ms);
/* Queues a fault at the fake provider: kind, count, and optional status / retry_after / delay_ms (-1: unset). */
void itest_fault (harness_t *h, const char *provider, const char *kind, int count, int status, int retry_after,
                  int delay_ms);
/* 1 when the last request provider's fake had is a code exchange (it is at the provider). */
int itest_exchange_arrived (harness_t *h, const char *provider);
/* The error code of a ferrulectl JSON reply, or "" when ok. */
const char *itest_code (const json_t *reply);
/* Fail the test unless got is the token want (itest_assert_same_token) or another token than
 * than (itest_assert_other_token); what names the reply in the failure, which never prints a
 * token (the test's output is kept, and may be shown anywhere), only whether each was there and
 * its length. */
void itest_assert_same_token (const char *got, const char *want, const char *what);
void itest_assert_other_token (const char *got, const char *than, const char *what);
/* Fails the test unless reply is a timeout whose message contains needle; what names the request
 * in the failure. */
void itest_assert_timeout_says (const json_t *reply, const char *needle, const char *what);
/* The HTTP port a process (its log, e.g. "broker0", "w1") last said it serves /metrics on,
 * waiting up to 30 s for the line (a hang guard); -1 when it never did. */
int itest_http_port (harness_t *h, const char *log_name);
/* GET url, its body into body (cleared first, NUL-terminated; NULL: dropped); the HTTP status, 0
 * when nothing answered within 5 s. */
long itest_http_get (const char *url, mem_buf_t *body);
/* The browser's step of a connect: GETs an authorization URL without following the provider's
 * redirect, which must be a 302; its Location (caller frees). */
char *itest_authorize (const char *url);
/* The HTTP status of GET path on 127.0.0.1:port. */
long itest_http_status (int port, const char *path);
/* Polls path until it answers want, for up to 30 s (a hang guard); the last status. */
long itest_wait_http_status (int port, const char *path, long want);
/* The value of a series (its name with labels, as /metrics prints it, e.g.
 * "ferrule_worker_commit_batch_size_count") at the /metrics of a process (its log name); -1 when
 * the process serves none or the series is absent. */
double itest_metric (harness_t *h, const char *log_name, const char *series);
/* Writes text to the file at path (created or truncated); fails the running cmocka test when it
 * cannot. */
void itest_write_file (const char *path, const char *text);
/* What PostgreSQL's statistics say was read of a table so far: the entries of its index index, or
 * the rows its sequential scans read when index is NULL (each session reports within a second or
 * so of its transactions). For tests that count what a statement reads instead of timing it. */
long long itest_reads (harness_t *h, const char *table, const char *index);
/* The lines of one process's log (its log name, e.g. "broker0", "w1") whose message contains
 * needle; *more: the sum of the counts of events held back that they carry, the first "N more" of
 * each ("(and N more since the last line)", "N more ... since the last line", "answered N
 * more ..."). For lines said at most once a second. */
int itest_log_lines (harness_t *h, const char *log, const char *needle, unsigned long long *more);
/* The standard error of the last "ferrule-migrate arg0" (harness_migrate's log), "" when none;
 * the caller frees it. */
char *itest_migrate_stderr (harness_t *h, const char *arg0);
/* 1 when needle occurs in any log file (*.log) of the harness's work folder. */
int itest_workdir_contains (harness_t *h, const char *needle);
/* Waits up to timeout_ms (a bound against a hang, not a speed check) for needle to occur in a log
 * of the work folder; fails the test when it does not. A needle that an earlier line of another
 * cause also matches returns at once: name what tells this line apart. */
void itest_wait_log (harness_t *h, const char *needle, int timeout_ms);
/* How many lines of the log file at path are not JSON objects (every process of ours writes JSON
 * lines; a library writing its own text to stderr breaks that); the first of them, cut, into first. */
int itest_log_not_json (const char *path, char *first, size_t len);
/* Sets a raw ZeroMQ socket up (before its connect) as this process's client: the CURVE keys
 * named by the environment (harness_use_client), or nothing when it says plaintext. Fails the
 * running cmocka test when the keys cannot be read. */
void itest_secure (void *socket);
/* A DEALER of ctx connected (itest_secure) to endpoint that reads no answer: one queued in
 * ZeroMQ, a small kernel buffer, so that the broker's answers pile up on its side. */
void *itest_unread_socket (void *ctx, const char *endpoint);
#endif

/* A PostgreSQL cluster of the test's own in dir (for tests that stop and start it): scripts/pg
 * with action ("start" prints the admin URL into url, "stop"), its stderr appended to dir.log.
 * 0 when scripts/pg succeeded. */
int itest_pg (const char *action, const char *dir, char *url, size_t urlsize);
/* A token request for integration sent over a raw DEALER of ctx to h's broker 0 (CURVE as
 * itest_secure sets it up; rid NULL: none); returns the socket for itest_raw_reply. */
void *itest_raw_token (harness_t *h, void *ctx, const char *integration, const char *rid, int deadline_ms);
/* Another such request on the socket itest_raw_token returned. */
void itest_raw_send (void *c, const char *integration, const char *rid, int deadline_ms);
/* Sends what b holds as a request body, with the frames before it, on c. */
struct codec_builder;
void itest_raw_send_built (void *c, struct codec_builder *b);
/* Sends a ping with rid on c. */
void itest_raw_ping (void *c, const char *rid);
/* The body of the next reply on a raw DEALER as JSON, NULL after ms. */
json_t *itest_raw_reply (void *c, int ms);

/* A worker played by the test: a DEALER at h's broker 0 under routing id id, with the key of the
 * worker key_of from the harness's keys folder (harness_add_worker_key). */
void *itest_fake_worker (harness_t *h, void *ctx, const char *id, const char *key_of);
/* The same, returned once its CURVE handshake with broker 0 has succeeded; NULL when it did not
 * within ms. */
void *itest_fake_worker_handshaken (harness_t *h, void *ctx, const char *id, const char *key_of, int ms);
/* Its HELLO (not waiting: a refused peer has no connection to queue on). */
void itest_fake_hello (void *s, const char *id, int pid, int draining);
/* A request it received: whom to answer (itest_fake_req_close releases it). */
typedef struct {
    zmq_msg_t client, seq;
} itest_req_t;
/* 1, with req filled, when a REQ arrived within ms (PINGs skipped); 0 and req untouched else. */
int itest_fake_wait_req (void *s, int ms, itest_req_t *req);
/* The "workers" list of the next PING within ms (the caller owns it), NULL when none came; other
 * messages that come first are dropped. */
json_t *itest_fake_wait_ping (void *s, int ms);
/* Answers req with an ok token reply carrying token (rid NULL: none), not waiting. */
void itest_fake_rep (void *s, const itest_req_t *req, const char *token, const char *rid);
void itest_fake_req_close (itest_req_t *req);

/* Starts a cluster of the test's own for the suite name, in dir (dirsize bytes, filled in: under
 * the harness's work folder), and points FERRULE_TEST_PG_ADMIN_URL at it, so that harness_new uses
 * it. Exits with HARNESS_SKIP when no cluster was given to the suite (the test command's own
 * tells that PostgreSQL is there). 0, or -1 when the cluster did not start. */
int itest_pg_own (const char *name, char *dir, size_t dirsize);

/* Adds option ("name=value") to the ASAN_OPTIONS the harness passes on to the processes it starts
 * from now on, after what the test's own environment holds (outside AddressSanitizer's tree the
 * processes ignore it). */
void itest_asan_option (harness_t *h, const char *option);

/* A client of the brokers at endpoints, connected (its CURVE handshake done, a ping answered):
 * for timing the service's answers, not a connection's making or a ferrulectl start. */
struct client *itest_client_connected (const char *endpoints);
/* One attempt of op for integration, sent over a client connected (and pinged) first, so that the
 * request's deadline is timeout_ms whole: ferrulectl's --timeout also covers its own start and
 * connection, and a client splits its time into attempts. NULL when no broker answered the ping;
 * usable in a forked child (it fails no test itself). */
json_t *itest_call_once (const char *endpoints, const char *op, const char *integration, int timeout_ms);

/* Cached-token requests for integration, one every 20 ms or so over client (connected to the
 * brokers already, so that what is timed is the service's answer) until the monotonic time
 * until_ms, each with a 1 s timeout: how many came back served from the cache (not refreshed)
 * within hit_ms, how many did not, and the slowest. */
typedef struct {
    int served, late;
    int64_t slowest_ms;
} itest_hits_t;
struct client;
itest_hits_t itest_cached_hits (struct client *client, const char *integration, int64_t until_ms, int64_t hit_ms);

/* Every process of the test's cluster, as the database itself lists them (the postmaster too,
 * so that no new connection is answered either), but the harness's own session: for a stall,
 * SIGSTOP them all. Returns how many it wrote into pids (at most max). */
int itest_pg_processes (harness_t *h, pid_t *pids, int max);

/* Sends n token requests at once (pipelined over one DEALER per endpoint, round robin),
 * request i for ids[i % nids], and collects every reply within timeout_ms. Returns the replies
 * as a JSON array in request order (a missing reply is null); caller decrefs. */
json_t *itest_storm (const char *const *endpoints, size_t nendpoints, const char *const *ids, size_t nids,
                     size_t n, int timeout_ms);
/* The same, request i sent pace_ms * i after the first, with before_send (may be NULL) called
 * just before each. */
json_t *itest_storm_paced (const char *const *endpoints, size_t nendpoints, const char *const *ids, size_t nids,
                           size_t n, int timeout_ms, int pace_ms, void (*before_send) (void *arg, size_t i), void *arg);
