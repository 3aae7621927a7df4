/* schema.h - the database schema version this build needs, and the start-up check against it */
#ifndef FERRULE_SCHEMA_H
#define FERRULE_SCHEMA_H
#include "result.h"
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

/* #define FERRULE_SCHEMA_VERSION N: the highest migrations/NNN_name.sql number, which the build
 * (migrations/CMakeLists.txt) writes into this generated header. */
#include "ferrule_schema_version.h"
#ifndef FERRULE_SCHEMA_VERSION
#error "FERRULE_SCHEMA_VERSION is not defined: build through CMake, which generates ferrule_schema_version.h"
#endif

/* The highest applied migration version; 0 when schema_migrations does not exist yet.
 * FR_DATABASE_UNAVAILABLE when the query fails for connection reasons, FR_CONFIGURATION when the
 * role may not read the table, FR_INTERNAL otherwise; err says why. */
fr_status_t schema_read_version (PGconn *conn, int *version, char *err, size_t errlen) FR_MUSTCHECK;

/* FR_OK when the database's schema is at FERRULE_SCHEMA_VERSION or later (a newer schema stays
 * compatible with older services during a rolling upgrade). Otherwise FR_CONFIGURATION with err
 * telling the operator to run "ferrule-migrate up", or a status from schema_read_version. */
fr_status_t schema_check (PGconn *conn, char *err, size_t errlen) FR_MUSTCHECK;

/* schema_check, waiting for the server no later than deadline_ms (clock_mono_ms) and no longer
 * than stop_fd stays unreadable (pgwait.h; -1 for either: none): FR_DATABASE_UNAVAILABLE when
 * the wait ends first, and the connection is then of no further use. */
fr_status_t schema_check_until (PGconn *conn, int64_t deadline_ms, int stop_fd, char *err, size_t errlen) FR_MUSTCHECK;
#endif
