/* harness.h - integration tests start the real processes: a fresh migrated database, the fake
   OAuth provider, brokers, workers and ferrulectl, all on 127.0.0.1

   A test creates one harness, starts what it needs, talks to it through ferrulectl and the fake
   provider's admin API, asserts on the database, and destroys the harness:

       harness_t *h = harness_new ("refresh_rotation");    // exits 77 (skip) without a cluster
       assert_non_null (h);
       assert_true (harness_start_broker (h) >= 0);
       assert_true (harness_start_worker (h, "w1") == 0);
       assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
       json_t *grant = harness_fake (h, "POST", "/admin/grants",
                                     json_pack ("{s:s}", "provider", "fakebox"));  // body borrowed
       ...
       harness_destroy (&h);

   Everything a test starts logs into harness_workdir (h), which stays in the build tree after
   the test for reading. The PostgreSQL cluster itself comes from outside: scripts/test starts it
   and exports FERRULE_TEST_PG_ADMIN_URL. The workers connect as a runtime role of this harness
   (harness_runtime_role), set up with "ferrule-migrate grant-runtime" after "up".

   Providers in the providers file (harness_providers_file): "fakebox" (single-use refresh token
   rotation, client_secret_basic) and "fakegoogle" (reusable refresh tokens, client_secret_post),
   both served by the fake provider, which is configured to match. */
#ifndef FERRULE_HARNESS_H
#define FERRULE_HARNESS_H
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/types.h>

typedef struct harness_t harness_t;

#define HARNESS_SKIP 77             /* ctest SKIP_RETURN_CODE */
#define HARNESS_MAX_BROKERS 8
#define HARNESS_MAX_WORKERS 32

/* Creates the work folder, a fresh migrated database and a running fake provider. Exits with
   HARNESS_SKIP when FERRULE_TEST_PG_ADMIN_URL is unset; returns NULL (after saying why on
   stderr) when something cannot be set up. name: letters, digits and "_" read best. */
harness_t *harness_new (const char *name);

/* Stops every process the harness started (SIGTERM, SIGKILL after 5 s), drops the database and
   frees the harness; nulls *self_p, safe to call twice. The work folder is kept. */
void harness_destroy (harness_t **self_p);

/* The end of an integration test program: main returns harness_exit (cmocka_run_group_tests (...)).
   With a failed test it destroys the harnesses still alive, as exit would, and then ends as
   testexit (tests/testexit.h) does, without LeakSanitizer's report of what the failed test's
   longjmp left allocated; with none it returns 0. */
int harness_exit (int failed);

/* Stops every process the harness started (SIGTERM to all, SIGKILL after 5 s) and returns how
   many did not exit with status 0 on SIGTERM, naming each with its log on stderr. A test that
   wants the daemons to shut down cleanly (and, under ASan, without leaks) asserts it is 0 before
   harness_destroy. */
int harness_stop_all (harness_t *self);

/* Sets (value NULL: removes) a variable in the environment of brokers and workers started from
   now on. It overrides the harness's own defaults (FERRULE_PARTITIONS=64, FERRULE_DATABASE_URL,
   FERRULE_PROVIDERS_FILE, FERRULE_ENCRYPTION_KEY, FERRULE_SWEEP_MS=3600000: no sweep during a
   test unless it asks for one) but not a process's identity (worker id,
   broker endpoints). It lasts for the harness's life: where a file's tests share one harness, a
   test that sets a variable and restarts a worker hands both to the tests after it, so a test
   that depends on a value sets it itself (it_outage's last test does, after one that sweeps every
   100 ms). */
void harness_set_env (harness_t *self, const char *name, const char *value);

/* Workers started from now on run as "path ferrule-worker" (NULL: directly), for a wrapper that
   changes how the process runs (tests/integration/pidns.c: in its own PID namespace). */
void harness_set_worker_wrapper (harness_t *self, const char *path);

/* Starts a broker on two free ports; returns its index (0, 1, ...) or -1. Start the brokers
   before the workers: a worker connects to the brokers that exist when it starts. */
int harness_start_broker (harness_t *self);

/* Starts a worker connected to every broker started so far; 0 or -1. worker_id must be unique
   among the running workers. Restarting a stopped worker under the same id is fine. */
int harness_start_worker (harness_t *self, const char *worker_id);

/* Polls "ferrulectl --json ping" at each broker until every one answers ok, counts at least
   `workers` workers and has all its partitions owned. 0, or -1 on timeout (with the last answer
   summarised on stderr). */
int harness_wait_ready (harness_t *self, int workers, int timeout_ms);

/* The same, connected only to the brokers whose bit is set in broker_mask (bit i: broker i), to
   build a deployment where brokers see different workers. */
int harness_start_worker_on (harness_t *self, const char *worker_id, unsigned broker_mask);

/* Sends sig to a running worker (no-op if it is not running). Works from a forked copy of the
   test process too (a "killer" child); only the test process itself can reap, though. */
void harness_signal_worker (harness_t *self, const char *worker_id, int sig);

/* SIGTERM, waits up to 10 s, then SIGKILL. Returns the worker's exit status (128 + signal if a
   signal ended it), or -1 if no such worker was running. */
int harness_stop_worker (harness_t *self, const char *worker_id);

/* Waits up to timeout_ms for a worker to exit on its own (after a signal, say). Returns its exit
   status as harness_stop_worker does, or -1 if it is still running (or unknown). */
int harness_wait_worker_exit (harness_t *self, const char *worker_id, int timeout_ms);

/* The worker's process id, 0 when it is not running (for /proc checks). */
pid_t harness_worker_pid (harness_t *self, const char *worker_id);

/* True while the worker's process has not exited. */
int harness_worker_running (harness_t *self, const char *worker_id);

/* Sends sig to broker idx (no-op if it is not running). */
void harness_signal_broker (harness_t *self, int idx, int sig);

/* Stops broker idx if it runs (SIGTERM, SIGKILL after 10 s) and starts it again on the same
   ports. 0 or -1. */
int harness_restart_broker (harness_t *self, int idx);

/* The frontend endpoints of every started broker, comma-separated: ferrulectl's --broker. */
const char *harness_brokers (harness_t *self);
/* The frontend endpoint of broker idx, or NULL. */
const char *harness_broker_frontend (harness_t *self, int idx);

/* Runs "ferrulectl --json --broker <harness_brokers> arg0 ..." (NULL-terminated) and returns its
   standard output parsed as JSON (caller owns it), or NULL when it printed no JSON. *exit_code
   (may be NULL) gets the exit status, or -1 if ferrulectl could not be run or was killed after
   60 s. Output is capped at 1 MiB. The output is never printed: it holds tokens. */
json_t *harness_ctl (harness_t *self, int *exit_code, const char *arg0, ...)
    __attribute__ ((sentinel));

/* The same against the given brokers (comma-separated frontends, e.g. one
   harness_broker_frontend) instead of all of them. */
json_t *harness_ctl_at (harness_t *self, const char *brokers, int *exit_code, const char *arg0, ...)
    __attribute__ ((sentinel));

/* The same without --json, for checks on the human output: *stdout_text gets the whole standard
   output (caller frees it with free ()). Returns 0, or -1 if ferrulectl could not be run. */
int harness_ctl_text (harness_t *self, int *exit_code, char **stdout_text, const char *arg0, ...)
    __attribute__ ((sentinel));

/* Runs "ferrule-migrate arg0 ..." (NULL-terminated) as the schema owner, with the harness's
   FERRULE_ENCRYPTION_KEY and the harness_set_env variables. Returns its exit status (-1 if it
   could not run); *stdout_text (may be NULL) gets its standard output (free ()). Its standard
   error goes to migrate-<arg0>.log in the work folder. */
int harness_migrate (harness_t *self, char **stdout_text, const char *arg0, ...) __attribute__ ((sentinel));

/* One call to the fake provider's admin API, e.g. ("POST", "/admin/grants", body). body may be
   NULL and is borrowed. Returns the reply parsed as JSON (an empty object for an empty 2xx
   reply), or NULL when the call failed or the status was not 2xx (said on stderr). */
json_t *harness_fake (harness_t *self, const char *method, const char *path, json_t *body);

/* Like harness_fake, but also gives the HTTP status (0 if there was no answer) and returns the
   parsed body whatever the status. */
json_t *harness_fake_status (harness_t *self, const char *method, const char *path, json_t *body,
                             long *http_status);

/* A connection to the test database, opened on first use and closed by harness_destroy
   (borrowed). NULL if it cannot connect. */
PGconn *harness_db (harness_t *self);

/* Runs one SQL statement (no parameters) on harness_db; 0 or -1 with the error on stderr. If
   the server went away since the last query (a test restarting PostgreSQL), it reconnects and
   tries once more; so does harness_sql_int. */
int harness_sql (harness_t *self, const char *sql);

/* Runs a query expected to return one row with one integer column; the value, or -1 on error. */
long long harness_sql_int (harness_t *self, const char *sql);

/* Runs one SQL statement (an INSERT, say) as it would have run before the migration that added
   constraint to table: for rows stored before it, which a NOT VALID constraint leaves in place.
   It drops the constraint, runs sql and adds the constraint back from its own definition, in one
   transaction. 0 or -1 with the error on stderr. */
int harness_sql_before_constraint (harness_t *self, const char *table, const char *constraint, const char *sql);

/* CURVE: each harness makes its brokers' key pair, an allow-list of clients holding the test's
   own client "harness" (the policy allows it everything), and a key per worker (added to the
   workers list, bound to the worker id, when the worker first starts). The test process uses
   the "harness" client's key (FERRULE_CURVE_SECRET_KEY_FILE and FERRULE_BROKER_PUBLIC_KEY_FILE
   in its environment), so ferrulectl and client_new connect with it. Brokers write their audit
   log to <workdir>/broker<N>.audit. */
#define HARNESS_CLIENT "harness"
/* Makes a key pair for client name (keys_dir/client-<name>.key) and lists it; running brokers
   re-read their lists (SIGHUP). 0 or -1. */
int harness_add_client (harness_t *self, const char *name);
/* Makes a key pair for worker_id (keys_dir/worker-<id>.key) and lists it, as harness_start_worker
   does on a worker's first start; for tests that play a worker themselves. 0 or -1. */
int harness_add_worker_key (harness_t *self, const char *worker_id);
/* Broker idx's backend endpoint (NULL: none), and its pid (-1: not running). */
const char *harness_broker_backend (harness_t *self, int idx);
int harness_broker_pid (harness_t *self, int idx);
/* Waits up to timeout_ms for broker idx to exit on its own (one that refused to start): its exit
   status as harness_stop_worker gives a worker's, or -1 while it still runs (or no such broker). */
int harness_wait_broker_exit (harness_t *self, int idx, int timeout_ms);
/* Removes client name from the clients list (brokers are not told: harness_reload_brokers). */
int harness_remove_client (harness_t *self, const char *name);
/* Removes worker_id's key from the workers list (brokers are not told: harness_reload_brokers). */
int harness_remove_worker_key (harness_t *self, const char *worker_id);
/* From now on this process (ferrulectl, client_new) uses client name's key. 0 or -1. */
int harness_use_client (harness_t *self, const char *name);
/* Replaces the policy file (brokers are not told: harness_reload_brokers). 0 or -1. */
int harness_write_policy (harness_t *self, const char *text);
/* SIGHUP to every running broker, once its handler is installed. */
void harness_reload_brokers (harness_t *self);
const char *harness_keys_dir (harness_t *self);
const char *harness_broker_public_key_file (harness_t *self);

int harness_port (harness_t *self);                       /* the fake provider's port */
const char *harness_database_url (harness_t *self);        /* as the schema owner */
const char *harness_runtime_url (harness_t *self);         /* as the workers' runtime role */
const char *harness_runtime_role (harness_t *self);
const char *harness_workdir (harness_t *self);
const char *harness_providers_file (harness_t *self);
const char *harness_encryption_key (harness_t *self);     /* base64 of 32 bytes */
#endif
