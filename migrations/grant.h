/* grant.h - the workers' runtime role: the schema owner grants it exactly what a worker needs
 * (read and write the current state, append to the chain) and nothing else */
#ifndef FERRULE_GRANT_H
#define FERRULE_GRANT_H
#include "db.h"
#include "result.h"
#include <libpq-fe.h>

/* Tables the runtime role may only read and append to. */
#define GRANT_APPEND_ONLY_TABLES "token_chain,events"

/* Sets up role (created WITH LOGIN, without a password, when it does not exist; *created is then
 * 1) and records it in runtime_roles so "up" grants it again after later migrations. Idempotent.
 * Runs in one transaction. FR_CONFIGURATION when the schema is too old or role is the current
 * user; FR_DATABASE_UNAVAILABLE when the session is lost; FR_INTERNAL otherwise. */
fr_status_t grant_runtime (PGconn *conn, const char *role, int *created, db_error_t *err) FR_MUSTCHECK;

/* Grants every role recorded in runtime_roles again (after "up"). *count gets how many roles
 * were granted; a recorded role that no longer exists is skipped and named in *missing (the
 * first one, "" when none). FR_OK when runtime_roles does not exist yet. */
fr_status_t grant_reapply (PGconn *conn, int *count, char *missing, size_t missing_len,
                           db_error_t *err) FR_MUSTCHECK;
/* Before "up" applies anything: the default privileges of every recorded runtime role (that
 * still exists) become SELECT, INSERT on tables, so no table a migration creates is ever more
 * than readable and appendable for the workers until grant_reapply at the end, even when up
 * stops before it, and whatever an older release left as default. *count gets how many roles.
 * One transaction; FR_OK when runtime_roles does not exist yet. */
fr_status_t grant_narrow_defaults (PGconn *conn, int *count, db_error_t *err) FR_MUSTCHECK;
#endif
