/* schema_probe.c - runs schema_check against a database, as a worker does at start-up, for
 * test_migrate.sh: prints "<result code> <message>" and exits 0 only for ok */
#include "result.h"
#include "schema.h"
#include <libpq-fe.h>
#include <stdio.h>

int
main (int argc, char **argv)
{
    char err [512] = "";
    if (argc != 2) {
        fprintf (stderr, "usage: schema_probe CONNINFO\n");
        return 2;
    }
    PGconn *conn = PQconnectdb (argv [1]);
    fr_status_t st = schema_check (conn, err, sizeof err);
    printf ("%s %s\n", result_code (st), err);
    PQfinish (conn);
    return st == FR_OK ? 0 : 1;
}
