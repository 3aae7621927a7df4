/* test_migrate_fill.c - ferrule-migrate gives rows made before migration 009 their routing hash
 * (route_hash, FNV-1a 64 of the id as common/ring.c computes it, as a signed bigint): "up" fills
 * them after the migrations, in batches, and "fill-route-hashes" does it alone; rows another
 * session holds are skipped, never waited for, tried again, and reported when still held; an "up"
 * with nothing to fill reads no row of integrations (021's index) */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "clock.h"
#include "itest.h"
#include "ring.h"

#define BULK_ROWS 2500          /* more than two of ferrule-migrate's batches of 1000 */
#define HASHED_ROWS 20000       /* a table that a look through all of it reads visibly */

static harness_t *h;

static int
teardown (void **state)
{
    return itest_teardown (&h);
}

/* Integrations as a build before 009 made them: no route_hash. */
static void
insert_unhashed (const char *id)
{
    char sql [512];
    snprintf (sql, sizeof sql, "INSERT INTO integrations (id, provider, key_id) VALUES ('%s', 'fakebox', 1)", id);
    assert_int_equal (harness_sql (h, sql), 0);
}

/* Every row's route_hash against ring_hash of its id, computed here: how many rows there are,
 * how many have none (*unhashed) and how many a wrong one (*wrong); *negative counts the hashes
 * stored as negative bigints (their unsigned value is 2^63 or more). */
static long long
check_hashes (long long *unhashed, long long *wrong, long long *negative)
{
    PGresult *res = PQexec (harness_db (h), "SELECT id, route_hash FROM integrations");
    assert_int_equal (PQresultStatus (res), PGRES_TUPLES_OK);
    *unhashed = *wrong = *negative = 0;
    for (int i = 0; i < PQntuples (res); i++) {
        const char *id = PQgetvalue (res, i, 0);
        if (PQgetisnull (res, i, 1)) {
            (*unhashed)++;
            continue;
        }
        long long got = strtoll (PQgetvalue (res, i, 1), NULL, 10);
        long long want = (long long) (int64_t) ring_hash (id, strlen (id));
        *wrong += got != want;
        *negative += got < 0;
    }
    long long rows = PQntuples (res);
    PQclear (res);
    return rows;
}

/* A deployment from before 009: BULK_ROWS rows and a few whose ids an array literal must quote
 * (NULL reads as a null unquoted), all without a routing hash. "up" fills every one in with the
 * brokers' own hash and says how many; a second "up" finds nothing to do; "up --no-fill" leaves
 * them for later. */
static void
test_up_fills_route_hashes (void **state)
{
    (void) state;
    char *out = NULL;
    long long unhashed, wrong, negative;
    h = harness_new ("migrate_fill");
    assert_non_null (h);
    char sql [256];
    snprintf (sql, sizeof sql, "INSERT INTO integrations (id, provider, key_id)"
              " SELECT 'pre009-' || g || ':box', 'fakebox', 1 FROM generate_series (1, %d) AS g", BULK_ROWS);
    assert_int_equal (harness_sql (h, sql), 0);
    insert_unhashed ("NULL");
    insert_unhashed ("null");
    insert_unhashed ("a.b-c_d:e");
    char longest [129];
    memset (longest, 'z', 128);
    longest [128] = '\0';
    insert_unhashed (longest);
    const long long rows = BULK_ROWS + 4;
    assert_int_equal (check_hashes (&unhashed, &wrong, &negative), rows);
    assert_int_equal (unhashed, rows);

    int64_t t0 = clock_mono_ms ();
    int rc = harness_migrate (h, &out, "up", NULL);
    printf ("up (%lld ms), exit %d:\n%s", (long long) (clock_mono_ms () - t0), rc, out);
    check_hashes (&unhashed, &wrong, &negative);
    printf ("%lld rows: %lld without a routing hash, %lld with a wrong one, %lld stored negative\n", rows, unhashed,
            wrong, negative);
    assert_int_equal (rc, 0);
    assert_int_equal (unhashed, 0);
    assert_int_equal (wrong, 0);
    assert_true (negative > 0 && negative < rows);      /* both halves of the unsigned range */
    snprintf (sql, sizeof sql, "filled in the routing hash of %lld integrations", rows);
    assert_non_null (strstr (out, sql));
    free (out);

    /* idempotent: nothing left, nothing said */
    assert_int_equal (harness_migrate (h, &out, "up", NULL), 0);
    assert_null (strstr (out, "filled in"));
    free (out);
    assert_int_equal (harness_migrate (h, &out, "fill-route-hashes", NULL), 0);
    assert_non_null (strstr (out, "filled in the routing hash of 0 integrations"));
    free (out);

    /* an up that leaves them for later (to run the fill as a job of its own) */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET route_hash = NULL"), 0);
    assert_int_equal (harness_migrate (h, &out, "up", "--no-fill", NULL), 0);
    assert_null (strstr (out, "filled in"));
    free (out);
    check_hashes (&unhashed, &wrong, &negative);
    assert_int_equal (unhashed, rows);
}

/* Rows another session holds (a worker's claim or commit in its transaction): the fill never
 * waits for them. One is held for two seconds: skipped, then filled when tried again. One is held
 * throughout: reported, with exit 1, and filled by the next run once it is free. */
static void
test_fill_skips_held_rows (void **state)
{
    (void) state;
    char *out = NULL;
    long long unhashed, wrong, negative;
    char id [32];
    h = harness_new ("migrate_fill_held");
    assert_non_null (h);
    for (int i = 0; i < 30; i++) {
        snprintf (id, sizeof id, "held%d:box", i);
        insert_unhashed (id);
    }
    PGconn *holder = PQconnectdb (harness_database_url (h));
    PGconn *briefly = PQconnectdb (harness_database_url (h));
    assert_int_equal (PQstatus (holder), CONNECTION_OK);
    assert_int_equal (PQstatus (briefly), CONNECTION_OK);
    PGresult *res = PQexec (holder, "BEGIN; UPDATE integrations SET updated_at = now () WHERE id = 'held0:box'");
    assert_int_equal (PQresultStatus (res), PGRES_COMMAND_OK);
    PQclear (res);
    res = PQexec (briefly, "BEGIN; UPDATE integrations SET updated_at = now () WHERE id = 'held1:box'");
    assert_int_equal (PQresultStatus (res), PGRES_COMMAND_OK);
    PQclear (res);
    assert_int_equal (PQsendQuery (briefly, "SELECT pg_sleep (2); COMMIT"), 1);

    int64_t t0 = clock_mono_ms ();
    int rc = harness_migrate (h, &out, "fill-route-hashes", NULL);
    int64_t took = clock_mono_ms () - t0;
    char *err = itest_migrate_stderr (h, "fill-route-hashes");
    printf ("fill-route-hashes (%lld ms), exit %d:\n%s%s", (long long) took, rc, out, err);
    while ((res = PQgetResult (briefly)))
        PQclear (res);
    assert_int_equal (rc, 1);
    assert_non_null (strstr (out, "filled in the routing hash of 29 integrations"));
    assert_non_null (strstr (err, "1 integration still has no routing hash"));
    assert_true (took < 20000);                   /* it did not wait for the held row */
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations WHERE route_hash IS NULL AND id = 'held0:box'"), 1);
    free (out);
    free (err);

    res = PQexec (holder, "COMMIT");
    PQclear (res);
    assert_int_equal (harness_migrate (h, &out, "fill-route-hashes", NULL), 0);
    assert_non_null (strstr (out, "filled in the routing hash of 1 integration\n"));
    free (out);
    assert_int_equal (check_hashes (&unhashed, &wrong, &negative), 30);
    assert_int_equal (unhashed, 0);
    assert_int_equal (wrong, 0);
    PQfinish (holder);
    PQfinish (briefly);
}

/* Waits until no other session of the test's database is left (those of ferrule-migrate: a
 * session reports the rows it read when it ends, before it leaves pg_stat_activity), and has this
 * session report what it read so far, so that the counts read next are complete. */
static void
settle_reads (void)
{
    const char *others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database ()"
                         " AND pid <> pg_backend_pid () AND backend_type = 'client backend'";
    for (int64_t until = clock_mono_ms () + 30000; harness_sql_int (h, others) > 0 && clock_mono_ms () < until;
         usleep (50000))
        ;
    assert_int_equal (harness_sql_int (h, others), 0);
    if (harness_sql_int (h, "SELECT current_setting ('server_version_num')::integer") >= 150000)
        assert_int_equal (harness_sql (h, "SELECT pg_stat_force_next_flush ()"), 0);
    else
        sleep (2);                  /* before 15, a collector process gathers the reports, within a second */
}

/* The rows of integrations read so far, by sequential scans and fetched through indexes. */
static long long
rows_read (void)
{
    return harness_sql_int (h, "SELECT COALESCE (sum (seq_tup_read + COALESCE (idx_tup_fetch, 0)), 0)"
                               " FROM pg_stat_user_tables WHERE relname = 'integrations'");
}

/* Every deploy runs "up", and every "up" looks for rows without a routing hash. Where every row
 * has one, that look read the whole table (through the primary key, every row fetched to see its
 * hash) to find none: 10 million rows a deploy at scale. With 021's index over the rows without a
 * hash, it reads none. Counted in PostgreSQL's statistics, not timed. */
static void
test_up_with_nothing_to_fill_reads_no_rows (void **state)
{
    (void) state;
    char *out = NULL;
    char sql [512];
    h = harness_new ("migrate_fill_noop");
    assert_non_null (h);
    /* any hash will do: no worker reads these rows */
    snprintf (sql, sizeof sql, "INSERT INTO integrations (id, provider, key_id, route_hash)"
              " SELECT 'hashed-' || g || ':box', 'fakebox', 1, g FROM generate_series (1, %d) AS g", HASHED_ROWS);
    assert_int_equal (harness_sql (h, sql), 0);
    assert_int_equal (harness_sql (h, "ANALYZE integrations"), 0);
    settle_reads ();
    long long before = rows_read ();

    int64_t t0 = clock_mono_ms ();
    int rc = harness_migrate (h, &out, "up", NULL);
    printf ("up (%lld ms), exit %d:\n%s", (long long) (clock_mono_ms () - t0), rc, out);
    assert_int_equal (rc, 0);
    assert_null (strstr (out, "filled in"));
    free (out);
    settle_reads ();
    long long read = rows_read () - before;
    printf ("an up with nothing to fill read %lld rows of integrations, which holds %d, all hashed\n", read,
            HASHED_ROWS);
    if (read >= HASHED_ROWS / 100)
        fail_msg ("an up with nothing to fill read %lld rows of integrations (%d rows, every one with its routing"
                  " hash): its look for rows without one read the table", read, HASHED_ROWS);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_teardown (test_up_fills_route_hashes, teardown),
        cmocka_unit_test_teardown (test_fill_skips_held_rows, teardown),
        cmocka_unit_test_teardown (test_up_with_nothing_to_fill_reads_no_rows, teardown),
    };
    return harness_exit (cmocka_run_group_tests (tests, NULL, NULL));
}
