#!/usr/bin/env bash
# test_migrate.sh - ferrule-migrate against a real PostgreSQL, in a database made for the run.
#
#   FERRULE_TEST_PG_ADMIN_URL  conninfo or URI to the "postgres" database; the role may CREATE DATABASE
#                              (unset: the test is skipped with exit 77)
#   FERRULE_BIN_DIR            folder holding ferrule-migrate
#   FERRULE_SCHEMA_PROBE       optional: the migrate_schema_probe program, to test schema_check too
#   FERRULE_PSQL               optional: the psql to use
set -u

if [ -z "${FERRULE_TEST_PG_ADMIN_URL:-}" ]; then
    echo "skipped: set FERRULE_TEST_PG_ADMIN_URL to a conninfo for the postgres database of a test cluster"
    exit 77
fi
: "${FERRULE_BIN_DIR:?set FERRULE_BIN_DIR to the folder holding ferrule-migrate}"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MIGRATIONS_SRC="$HERE/../../migrations"
MIGRATE="$FERRULE_BIN_DIR/ferrule-migrate"
PROBE="${FERRULE_SCHEMA_PROBE:-}"
LOCK_KEY=9178084749648434160        # LEDGER_LOCK_KEY in migrations/ledger.h
ADMIN="$FERRULE_TEST_PG_ADMIN_URL"

PSQL="${FERRULE_PSQL:-$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -n 1)}"
if [ -z "$PSQL" ] || [ ! -x "$PSQL" ]; then
    echo "error: no psql found: install postgresql-client or set FERRULE_PSQL" >&2
    exit 1
fi
if [ ! -x "$MIGRATE" ]; then
    echo "error: \"$MIGRATE\" is not an executable: build the ferrule-migrate target first" >&2
    exit 1
fi

DB="ferrule_migrate_test_$$_$RANDOM"
RT_ROLE="${DB}_rt"                  # a runtime role: roles are the cluster's, not the database's
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferrule-migrate-test.XXXXXX")
FAILURES=0

# The admin URL with its database replaced by $1 (a URI's path, or a later dbname= keyword).
url_for () {
    local re='^(postgres(ql)?://[^/?]*)(/[^?]*)?(\?.*)?$'
    if [[ "$ADMIN" =~ $re ]]; then
        printf '%s/%s%s' "${BASH_REMATCH[1]}" "$1" "${BASH_REMATCH[4]}"
    else
        printf '%s dbname=%s' "$ADMIN" "$1"
    fi
}
DB_URL=$(url_for "$DB")

psql_admin () { "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -d "$ADMIN" "$@"; }
psql_db () { "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB_URL" "$@"; }

cleanup () {
    local pid
    for pid in $(jobs -p); do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    psql_admin -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null
    psql_admin -c "DROP DATABASE IF EXISTS \"${DB}_009\" WITH (FORCE)" >/dev/null
    psql_admin -c "DROP DATABASE IF EXISTS \"${DB}_005\" WITH (FORCE)" >/dev/null 2>&1
    psql_admin -c "DROP DATABASE IF EXISTS \"${DB}_locks\" WITH (FORCE)" >/dev/null 2>&1
    psql_admin -c "DROP DATABASE IF EXISTS \"${DB}_av\" WITH (FORCE)" >/dev/null 2>&1
    [ -z "${NAPTIME:-}" ] || psql_admin -c "ALTER SYSTEM RESET autovacuum_naptime" -c "SELECT pg_reload_conf ()" >/dev/null 2>&1
    psql_admin -c "DROP DATABASE IF EXISTS \"${DB}_grants\" WITH (FORCE)" >/dev/null 2>&1
    psql_admin -c "DROP DATABASE IF EXISTS \"${DB}_grantlock\" WITH (FORCE)" >/dev/null 2>&1
    psql_admin -c "DROP ROLE IF EXISTS \"$RT_ROLE\"" >/dev/null 2>&1
    psql_admin -c "DROP ROLE IF EXISTS \"${DB}_rt2\"" >/dev/null 2>&1
    psql_admin -c "DROP ROLE IF EXISTS \"${DB}_noread\"" >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT

fail () {
    echo "FAIL: $*" >&2
    FAILURES=$((FAILURES + 1))
}
pass () {
    echo "ok: $*"
}

# expect_exit CODE DESCRIPTION COMMAND...: runs it with output in $WORK/out and $WORK/err.
expect_exit () {
    local want=$1 what=$2
    shift 2
    "$@" >"$WORK/out" 2>"$WORK/err"
    local got=$?
    if [ "$got" -eq "$want" ]; then
        pass "$what (exit $got)"
    else
        fail "$what: exit $got, expected $want"
        sed 's/^/    stdout: /' "$WORK/out" >&2
        sed 's/^/    stderr: /' "$WORK/err" >&2
    fi
}

# expect_in FILE PATTERN DESCRIPTION: grep -E PATTERN in FILE.
expect_in () {
    if grep -Eq -- "$2" "$1"; then
        pass "$3"
    else
        fail "$3: no \"$2\" in $(basename "$1")"
        sed 's/^/    /' "$1" >&2
    fi
}

migrate () { "$MIGRATE" --database-url "$DB_URL" "$@"; }

FILES=("$MIGRATIONS_SRC"/[0-9][0-9][0-9]_*.sql)
NFILES=${#FILES[@]}
FIRST=$(basename "${FILES[0]}" .sql)
HIGHEST=$(basename "${FILES[$((NFILES - 1))]}" | cut -c1-3)
HIGHEST=$((10#$HIGHEST))

psql_admin -c "CREATE DATABASE \"$DB\"" >/dev/null || { echo "error: could not create database $DB" >&2; exit 1; }
echo "database $DB, $NFILES migration(s) up to version $HIGHEST"

# --- an empty database
expect_exit 0 "version" "$MIGRATE" version
expect_in "$WORK/out" "^$HIGHEST\$" "version prints the schema version this build needs"
expect_exit 7 "status before up" migrate status
expect_in "$WORK/out" "pending" "status lists pending migrations"
expect_exit 7 "verify before up" migrate verify
expect_exit 5 "wait --timeout 1 on an empty database" migrate wait --timeout 1
expect_in "$WORK/err" "ferrule-migrate up" "wait says to run up"
if [ -n "$PROBE" ]; then
    expect_exit 1 "schema_check before up" "$PROBE" "$DB_URL"
    expect_in "$WORK/out" "^configuration database schema is at version 0, this build needs version $HIGHEST: run \"ferrule-migrate up\"" \
        "schema_check names both versions and the fix"
fi

# hold_open NAME SQL: a session named NAME (its application_name) runs SQL and stays idle in its
# transaction until release_hold; its server pid in HOLD_PID. A process started meanwhile in the
# background gets "9>&-": holding the pipe's end open, it would keep the session from ending.
hold_open () {
    rm -f "$WORK/hold.fifo"
    mkfifo "$WORK/hold.fifo"
    PGAPPNAME="$1" "$PSQL" -X -q -d "${HOLD_URL:-$DB_URL}" <"$WORK/hold.fifo" >/dev/null 2>&1 &
    HOLD_PSQL=$!
    exec 9>"$WORK/hold.fifo"
    echo "$2" >&9
    HOLD_PID=
    for _ in $(seq 50); do
        HOLD_PID=$(psql_db -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$1'
                               AND state = 'idle in transaction'")
        [ -n "$HOLD_PID" ] && return 0
        sleep 0.1
    done
    fail "the session $1 did not open its transaction"
}
release_hold () {
    echo "COMMIT;" >&9
    exec 9>&-
    wait "$HOLD_PSQL"
}

# waits up to $1 tenths of a second for process $2 to end; 1 when it did not
ends_within () {
    for _ in $(seq "$1"); do
        kill -0 "$2" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# --- a waiter started before the schema exists sees it arrive
migrate wait --timeout 30 >"$WORK/wait.out" 2>"$WORK/wait.err" &
WAITER=$!

# --- two concurrent ups: the migration lock is held, by a session that stays open, until both say
# they wait for it (a lock held for a fixed time was missed by an up that started late on a
# loaded machine)
hold_open lock-holder "BEGIN; SELECT pg_advisory_xact_lock($LOCK_KEY);"
migrate up 9>&- >"$WORK/up1.out" 2>"$WORK/up1.err" &
UP1=$!
migrate up 9>&- >"$WORK/up2.out" 2>"$WORK/up2.err" &
UP2=$!
for _ in $(seq 300); do
    [ "$(grep -l "waiting for it to finish" "$WORK/up1.err" "$WORK/up2.err" 2>/dev/null | wc -l)" -eq 2 ] && break
    sleep 0.1
done
release_hold
wait "$UP1"; RC1=$?
wait "$UP2"; RC2=$?
if [ "$RC1" -eq 0 ] && [ "$RC2" -eq 0 ]; then
    pass "two concurrent ups both exit 0"
else
    fail "concurrent ups exited $RC1 and $RC2"
    cat "$WORK"/up1.* "$WORK"/up2.* >&2
fi
APPLIERS=$(grep -l "^applied $FIRST " "$WORK/up1.out" "$WORK/up2.out" | wc -l)
UPTODATE=$(grep -l "^schema is up to date at version $HIGHEST" "$WORK/up1.out" "$WORK/up2.out" | wc -l)
[ "$APPLIERS" -eq 1 ] && [ "$UPTODATE" -eq 1 ] \
    && pass "one up applied, the other found the schema up to date" \
    || { fail "expected one applier and one up to date, got $APPLIERS and $UPTODATE"; cat "$WORK"/up?.out >&2; }
WAITED=$(grep -l "waiting for it to finish" "$WORK/up1.err" "$WORK/up2.err" | wc -l)
[ "$WAITED" -eq 2 ] && pass "both ups waited for the lock" || fail "$WAITED of 2 ups said they waited for the lock"
ROWS=$(psql_db -c "SELECT count(*) FROM schema_migrations")
[ "$ROWS" = "$NFILES" ] && pass "schema_migrations has one row per file ($ROWS)" \
    || fail "schema_migrations has $ROWS rows for $NFILES files"
CHECKSUM=$(psql_db -c "SELECT checksum FROM schema_migrations ORDER BY version LIMIT 1")
FILE_SUM=$(sha256sum "${FILES[0]}" | cut -d' ' -f1)
[ "$CHECKSUM" = "$FILE_SUM" ] && pass "the recorded checksum is the file's sha-256" \
    || fail "recorded checksum $CHECKSUM, file's sha-256 $FILE_SUM"
cat "$WORK/up1.err" "$WORK/up2.err" >"$WORK/up.err"
expect_in "$WORK/up.err" "^\\{.*\"msg\":\"applied migration $FIRST in [0-9]+ ms" "up logs a JSON line per applied migration"

# --- a session that is no ferrule-migrate holding the migration lock (a psql, a pooler's session in
# transaction mode, where the lock outlives the up that took it) is named, with how to end it
hold_open lock-squatter "BEGIN; SELECT pg_advisory_xact_lock($LOCK_KEY);"
migrate up 9>&- >"$WORK/squat.out" 2>"$WORK/squat.err" &
SQUAT=$!
for _ in $(seq 300); do
    grep -q "waiting for it to finish" "$WORK/squat.err" 2>/dev/null && break
    sleep 0.1
done
expect_in "$WORK/squat.err" "the migration lock is held by pid $HOLD_PID \\(user \"[^\"]+\", application \"lock-squatter\", [^)]+\\), idle in transaction, its transaction open for [0-9]+ s: waiting for it to finish\$" \
    "up names the session that holds the migration lock"
expect_in "$WORK/squat.err" "^ferrule-migrate: hint: .*SELECT pg_terminate_backend \\($HOLD_PID\\)" \
    "and says how to end it"
release_hold
wait "$SQUAT"; RCS=$?
[ "$RCS" -eq 0 ] && pass "then that up goes on" || { fail "the up behind the squatter exited $RCS"; cat "$WORK"/squat.* >&2; }

wait "$WAITER"; RCW=$?
[ "$RCW" -eq 0 ] && pass "a waiting wait returns once the schema is applied" \
    || { fail "the waiting wait exited $RCW"; cat "$WORK"/wait.* >&2; }

# --- an up-to-date database
expect_exit 0 "status after up" migrate status
expect_in "$WORK/out" "up to date at version $HIGHEST" "status says up to date"
expect_exit 0 "status --json after up" migrate status --json
expect_in "$WORK/out" '"state": "up_to_date"' "status --json gives the state"
expect_exit 0 "verify after up" migrate verify
expect_exit 0 "wait --timeout 5 after up" migrate wait --timeout 5

# --- a role that may not read the schema (a runtime role never granted, as a worker's init
# container logs in) is told to have it granted, not to run up, which would change nothing
NOREAD="${DB}_noread"
psql_admin -c "CREATE ROLE \"$NOREAD\"" >/dev/null || fail "could not create role $NOREAD"
PGOPTIONS="-c role=$NOREAD" expect_exit 5 "wait as a role that may not read schema_migrations" \
    migrate wait --timeout 1
expect_in "$WORK/err" "permission denied for table schema_migrations" "wait says what was denied"
expect_in "$WORK/err" '^ferrule-migrate: hint: .*"ferrule-migrate grant-runtime ROLE"' "wait's hint is the grant"
if grep -q 'hint: run "ferrule-migrate up"' "$WORK/err"; then
    fail "wait told a role without rights to run up"
else
    pass "wait does not tell a role without rights to run up"
fi
PGOPTIONS="-c role=$NOREAD" expect_exit 1 "status as a role that may not read schema_migrations" migrate status
expect_in "$WORK/err" '^ferrule-migrate: hint: .*"ferrule-migrate grant-runtime ROLE"' "status's hint is the grant"
psql_admin -c "DROP ROLE \"$NOREAD\"" >/dev/null

# --- wait's timeout bounds a read that waits for a lock (a session holding schema_migrations
# locked, as a LOCK TABLE or an ALTER left in an open transaction does), and it leaves no
# statement waiting behind it on the server
hold_open ledger-locker "BEGIN; LOCK TABLE schema_migrations;"
STARTED=$SECONDS
expect_exit 5 "wait --timeout 2 while a session locks schema_migrations" \
    timeout 15 "$MIGRATE" --database-url "$DB_URL" wait --timeout 2
[ $((SECONDS - STARTED)) -le 6 ] && pass "it returned within its timeout and a margin" \
    || fail "wait --timeout 2 took $((SECONDS - STARTED)) s"
expect_in "$WORK/err" "the schema was not ready after [0-9.]+ seconds: could not read the applied migrations" \
    "it says it could not read the applied migrations"
# (active only: a backend still ending shows its last query as idle)
LEFT=$(psql_db -c "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%FROM schema_migrations%'
                   AND application_name = 'ferrule-migrate' AND state = 'active'")
[ "$LEFT" = 0 ] && pass "no read of wait's is left waiting for the lock" || fail "$LEFT read(s) of wait's still wait for the lock"
release_hold
expect_exit 0 "a third up" migrate up
expect_in "$WORK/out" "^schema is up to date at version $HIGHEST" "a third up has nothing to do"
if [ -n "$PROBE" ]; then
    expect_exit 0 "schema_check after up" "$PROBE" "$DB_URL"
fi

# --- integrations.id's rule: 007 rewrote it in a form cheaper to check; the same ids pass and fail
RULE=$(psql_db -c "SELECT string_agg(conname || '=' || convalidated, ',' ORDER BY conname) FROM pg_constraint
                   WHERE conrelid = 'integrations'::regclass AND contype = 'c' AND conname LIKE 'integrations_id%'")
[ "$RULE" = "integrations_id_format=true" ] && pass "integrations has one id rule, validated" \
    || fail "integrations' id rules: $RULE"
A128=$(printf 'a%.0s' $(seq 128))
for id in "a" "$A128" "Box.user_1:team-9"; do
    psql_db -c "BEGIN; INSERT INTO integrations (id, provider, key_id) VALUES ('$id', 'p', 1); ROLLBACK" >/dev/null 2>&1 \
        && pass "the id rule accepts a ${#id}-character id" || fail "the id rule refused \"$id\""
done
for id in "" "${A128}a" "a b" "caf\u00e9" "a/b" "a\nb"; do
    out=$(psql_db -c "BEGIN; INSERT INTO integrations (id, provider, key_id) VALUES (E'$id', 'p', 1); ROLLBACK" 2>&1)
    case "$out" in
        *'violates check constraint "integrations_id_format"'*) pass "the id rule refuses E'${id:0:12}'" ;;
        *) fail "the id rule let E'$id' in: $out" ;;
    esac
done

# --- 010: a workspace ends with a separator. Keys and dashboard links made from then on are
# refused without one; those stored before it (made here on a database at 009, then migrated)
# stay readable, and the workers' updates of them (verify, revoke, spending a link) still work
OLD_DB="${DB}_009"
OLD_URL=$(url_for "$OLD_DB")
psql_old () { "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -d "$OLD_URL" "$@"; }
mkdir -p "$WORK/upto009"
cp "$MIGRATIONS_SRC"/00[1-9]_*.sql "$WORK/upto009/"
psql_admin -c "CREATE DATABASE \"$OLD_DB\"" >/dev/null || fail "could not create database $OLD_DB"
expect_exit 0 "up to 009" "$MIGRATE" --database-url "$OLD_URL" --dir "$WORK/upto009" up
psql_old -c "INSERT INTO gateway_api_keys (key_hash, workspace, name, prefix) VALUES
                 (repeat ('a1', 32), 'acct4', 'old', 'frk_a'), (repeat ('b2', 32), 'acct4', 'old2', 'frk_b');
             INSERT INTO gateway_dashboard_links (token_hash, workspace, expires_at) VALUES
                 (repeat ('c3', 32), 'acct4', now () + interval '10 minutes')" >/dev/null \
    || fail "the rows of workspace \"acct4\" could not be stored at 009"
expect_exit 0 "up from 009" "$MIGRATE" --database-url "$OLD_URL" up
[ "$(psql_old -c "SELECT count(*) FROM gateway_api_keys WHERE workspace = 'acct4'")" = 2 ] \
    && pass "the keys stored before 010 are still there" || fail "the keys stored before 010 are gone"
# the workers' own statements (worker/store_gateway.c): verify, revoke, spend a link
for what in "UPDATE gateway_api_keys SET last_used_at = now () WHERE key_hash = repeat ('a1', 32) AND revoked_at IS NULL" \
            "UPDATE gateway_api_keys SET revoked_at = now () WHERE key_hash = repeat ('a1', 32) AND revoked_at IS NULL" \
            "UPDATE gateway_api_keys SET revoked_at = now () WHERE revoked_at IS NULL AND workspace !~ '[:._-]\$'" \
            "UPDATE gateway_dashboard_links SET used_at = now () WHERE token_hash = repeat ('c3', 32) AND used_at IS NULL"; do
    out=$(psql_old -c "$what RETURNING 1" 2>&1)
    [ "$out" = 1 ] && pass "after 010, an old row takes: ${what:0:60}..." || fail "after 010, $what: $out"
done
for ws in "acct4" "acct4:box" "x"; do
    out=$(psql_old -c "BEGIN; INSERT INTO gateway_api_keys (key_hash, workspace, name, prefix)
                       VALUES (repeat ('d4', 32), '$ws', 'new', 'frk_d'); ROLLBACK" 2>&1)
    case "$out" in
        *'violates check constraint "gateway_api_keys_workspace_end"'*) pass "after 010, a new key of workspace \"$ws\" is refused" ;;
        *) fail "after 010, a new key of workspace \"$ws\" was not refused: $out" ;;
    esac
    out=$(psql_old -c "BEGIN; INSERT INTO gateway_dashboard_links (token_hash, workspace, expires_at)
                       VALUES (repeat ('d4', 32), '$ws', now ()); ROLLBACK" 2>&1)
    case "$out" in
        *'violates check constraint "gateway_dashboard_links_workspace_end"'*) pass "after 010, a new link of workspace \"$ws\" is refused" ;;
        *) fail "after 010, a new link of workspace \"$ws\" was not refused: $out" ;;
    esac
done
for ws in "acct4:" "acct4." "acct4_" "acct4-"; do
    psql_old -c "BEGIN;
                 INSERT INTO gateway_api_keys (key_hash, workspace, name, prefix) VALUES (repeat ('e5', 32), '$ws', 'new', 'frk_e');
                 INSERT INTO gateway_dashboard_links (token_hash, workspace, expires_at) VALUES (repeat ('e5', 32), '$ws', now ());
                 ROLLBACK" >/dev/null 2>&1 \
        && pass "after 010, a key and a link of workspace \"$ws\" are stored" || fail "after 010, workspace \"$ws\" was refused"
done
psql_admin -c "DROP DATABASE IF EXISTS \"$OLD_DB\" WITH (FORCE)" >/dev/null

# --- a table a migration creates is never more than readable and appendable for the runtime role
# before up grants again at its end. At 005 with a runtime role (and the default privileges a
# release before this one left: UPDATE too), up applies 006 (events, append-only), then fails at
# the next migration, so its grants at the end never run: the role may read and append to events
# (a running release's triggers do) but not UPDATE it, and keeps its rights on the tables it had.
# A later up that ends grants the new tables' other rights. (SET ROLE: the privileges checked are
# the role's, as for a worker logged in as it.)
GRANT_DB="${DB}_grants"
GRANT_URL=$(url_for "$GRANT_DB")
psql_grant () { "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -d "$GRANT_URL" "$@"; }
# the SQLSTATE of $1 run as the runtime role, "ok" when it succeeds (rolled back either way)
as_runtime () {
    local out
    out=$(psql_grant -c '\set VERBOSITY verbose' -c "BEGIN; SET LOCAL ROLE \"$RT_ROLE\"; $1; ROLLBACK" 2>&1)
    if [ $? -eq 0 ]; then echo ok; else sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\):.*/\1/p' <<<"$out" | head -n 1; fi
}
mkdir -p "$WORK/grants"
cp "$MIGRATIONS_SRC"/00[1-5]_*.sql "$WORK/grants/"
psql_admin -c "CREATE DATABASE \"$GRANT_DB\"" >/dev/null || fail "could not create database $GRANT_DB"
expect_exit 0 "up to 005" "$MIGRATE" --database-url "$GRANT_URL" --dir "$WORK/grants" up
expect_exit 0 "grant-runtime at 005" "$MIGRATE" --database-url "$GRANT_URL" grant-runtime "$RT_ROLE"
psql_grant -c "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO \"$RT_ROLE\"" \
    || fail "could not give the runtime role an older release's default privileges"
cp "$MIGRATIONS_SRC"/006_*.sql "$WORK/grants/"
printf '%s\n' 'SELECT 1 / 0;' >"$WORK/grants/007_fails.sql"
expect_exit 1 "up applies 006, then fails at the next migration" "$MIGRATE" --database-url "$GRANT_URL" --dir "$WORK/grants" up
expect_in "$WORK/out" "^applied 006_events " "006 is applied"
for check in "42501 UPDATE events SET detail = detail" \
             "ok INSERT INTO events (type, diagnosis) VALUES ('test', 'test')" \
             "ok UPDATE integrations SET provider = provider WHERE false" \
             "42501 UPDATE token_chain SET outcome = outcome WHERE false"; do
    got=$(as_runtime "${check#* }")
    [ "$got" = "${check%% *}" ] && pass "before up's grants, the runtime role: ${check#* } answers ${check%% *}" \
        || fail "before up's grants, the runtime role: ${check#* } answered \"$got\", expected ${check%% *}"
done
expect_exit 0 "up to the newest version" "$MIGRATE" --database-url "$GRANT_URL" up
for check in "42501 UPDATE events SET detail = detail" "ok UPDATE event_deliveries SET attempts = attempts WHERE false"; do
    got=$(as_runtime "${check#* }")
    [ "$got" = "${check%% *}" ] && pass "after up, the runtime role: ${check#* } answers ${check%% *}" \
        || fail "after up, the runtime role: ${check#* } answered \"$got\", expected ${check%% *}"
done
DEFACL=$(psql_grant -c "SELECT string_agg (a.privilege_type, ',' ORDER BY a.privilege_type)
                        FROM pg_default_acl d, aclexplode (d.defaclacl) a
                        WHERE d.defaclobjtype = 'r' AND a.grantee = '\"$RT_ROLE\"'::regrole" 2>&1)
[ "$DEFACL" = "INSERT,SELECT" ] && pass "a new table's default privileges for the runtime role are SELECT and INSERT" \
    || fail "the runtime role's default privileges on tables are \"$DEFACL\", expected INSERT,SELECT"
psql_admin -c "DROP DATABASE IF EXISTS \"$GRANT_DB\" WITH (FORCE)" >/dev/null
psql_admin -c "DROP ROLE IF EXISTS \"$RT_ROLE\"" >/dev/null

# --- 018: the collection function the workers call on every connect, retry token and dashboard
# link also removes retry tokens and links a day past their expiry, at most 100 rows of each table
# per call; younger rows stay. Its statements run again without error (a no-transaction migration
# is run again after a failure), and the function stays the owner's, with its search_path pinned
psql_db -c "INSERT INTO gateway_dashboard_links (token_hash, workspace, expires_at)
                SELECT encode (sha256 (('gc' || g)::bytea), 'hex'), 'gc:', now () - interval '2 days'
                FROM generate_series (1, 150) g;
            INSERT INTO gateway_dashboard_links (token_hash, workspace, expires_at)
                VALUES (repeat ('f6', 32), 'gc:', now () - interval '23 hours');
            INSERT INTO gateway_retry_tokens (token_hash, state_hash, integration_id, provider, redirect_uri, expires_at)
                VALUES (repeat ('f7', 32), 's', 'gc:a', 'p', 'https://app.example.test/cb', now () - interval '25 hours'),
                       (repeat ('f8', 32), 's', 'gc:b', 'p', 'https://app.example.test/cb', now () + interval '10 minutes')" \
    >/dev/null || fail "could not store the rows for 018's collection"
GONE=$(psql_db -c "SELECT ferrule_gc_pending_authorizations ()" 2>&1)
LEFT=$(psql_db -c "SELECT (SELECT count(*) FROM gateway_dashboard_links WHERE workspace = 'gc:') || ' '
                       || (SELECT count(*) FROM gateway_retry_tokens WHERE integration_id LIKE 'gc:%')" 2>&1)
[ "$GONE" = 101 ] && [ "$LEFT" = "51 1" ] \
    && pass "018: one call removes 100 stale links and the stale retry token, and leaves the younger rows" \
    || fail "018: the collection removed $GONE rows and left $LEFT (links, retry tokens), expected 101 and \"51 1\""
psql_db -f "$MIGRATIONS_SRC/018_gateway_gc.sql" >"$WORK/018.out" 2>&1 \
    && pass "018's statements run again without error" \
    || { fail "018's statements failed when run again"; sed 's/^/    /' "$WORK/018.out" >&2; }
ACL=$(psql_db -c "SELECT has_function_privilege ('public', 'ferrule_gc_pending_authorizations ()', 'EXECUTE')
                  || ' ' || array_to_string (proconfig, ';') || ' ' || prosecdef
                  FROM pg_proc WHERE proname = 'ferrule_gc_pending_authorizations'" 2>&1)
[ "$ACL" = "false search_path=public, pg_temp true" ] \
    && pass "018: PUBLIC still may not run the function, which keeps its owner's rights and its search_path" \
    || fail "018: the function's rights and settings are \"$ACL\""

# --- a migration's lock refused is tried again, so the readers of its table never queue behind it
# for long: at 018, a session holds integrations in an open transaction (a pg_dump, an operator's
# psql left in BEGIN); up's ALTER TABLE of 019 gives up on the lock after its lock timeout (200 ms
# here) and tries again after a pause, instead of queueing until that transaction ends with every
# later reader and writer of integrations queued behind it. A reader that waits up to 1 s for its
# lock (a worker waits a quarter of a second) is never refused meanwhile; up says whom it waits
# for, and ends at the newest version once the session ends its transaction
LOCK_DB="${DB}_locks"
LOCK_URL=$(url_for "$LOCK_DB")
psql_lock () { "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -d "$LOCK_URL" "$@"; }
mkdir -p "$WORK/upto018"
cp "$MIGRATIONS_SRC"/00[1-9]_*.sql "$MIGRATIONS_SRC"/01[0-8]_*.sql "$WORK/upto018/"
psql_admin -c "CREATE DATABASE \"$LOCK_DB\"" >/dev/null || fail "could not create database $LOCK_DB"
expect_exit 0 "up to 018" "$MIGRATE" --database-url "$LOCK_URL" --dir "$WORK/upto018" up
HOLD_URL=$LOCK_URL hold_open integrations-reader "BEGIN; SELECT 1 FROM integrations LIMIT 1;"
FERRULE_MIGRATE_LOCK_TIMEOUT_MS=200 "$MIGRATE" --database-url "$LOCK_URL" up 9>&- \
    >"$WORK/locks.out" 2>"$WORK/locks.err" &
UPK=$!
sleep 1                                     # up connects, takes the migration lock, reaches 019
READS=0
REFUSED=0
END=$((SECONDS + 5))
while [ "$SECONDS" -lt "$END" ]; do
    psql_lock -c "SET lock_timeout = '1s'; SELECT 1 FROM integrations LIMIT 1" 9>&- >/dev/null 2>>"$WORK/reads.err" \
        || REFUSED=$((REFUSED + 1))
    READS=$((READS + 1))
    sleep 0.05
done
[ "$REFUSED" -eq 0 ] && pass "while up waits for the lock of 019, no reader of integrations waits 1 s ($READS reads)" \
    || { fail "$REFUSED of $READS reads of integrations waited over 1 s behind up's ALTER TABLE"; sort -u "$WORK/reads.err" >&2; }
if kill -0 "$UPK" 2>/dev/null; then pass "up goes on trying while the session holds the table"; else fail "up ended while the session held integrations"; fi
expect_in "$WORK/locks.err" "^ferrule-migrate: notice: 019_api_base_url: its transaction was refused a lock within 200 ms, held by pid $HOLD_PID \\(user \"[^\"]+\", application \"integrations-reader\", [^)]+\\), idle in transaction, its transaction open for [0-9]+ s; rolled back, it tries again in [0-9.]+ s \\(try [0-9]+\\)\$" \
    "up says each time its lock is refused, naming the session that holds it"
release_hold
unset HOLD_URL
if ends_within 150 "$UPK"; then
    wait "$UPK"; RCK=$?
    [ "$RCK" -eq 0 ] && pass "up applies once the session has ended its transaction" \
        || { fail "up exited $RCK"; sed 's/^/    /' "$WORK/locks.out" "$WORK/locks.err" >&2; }
else
    fail "up was still trying 15 s after the session ended its transaction"
    kill -KILL "$UPK"
    wait "$UPK" 2>/dev/null
fi
[ "$(psql_lock -c "SELECT max(version) FROM schema_migrations")" = "$HIGHEST" ] \
    && pass "the schema is at $HIGHEST" || fail "the schema is at $(psql_lock -c "SELECT max(version) FROM schema_migrations")"

# --- with a wait limit, up tries again until the migration has been held up that long in all,
# then fails naming the session
psql_lock -c "DELETE FROM schema_migrations WHERE version > 18; ALTER TABLE pending_authorizations DROP COLUMN browser_hash;
              ALTER TABLE integrations DROP COLUMN api_base_url" >/dev/null
HOLD_URL=$LOCK_URL hold_open integrations-reader "BEGIN; SELECT 1 FROM integrations LIMIT 1;"
STARTED=$SECONDS
FERRULE_MIGRATE_LOCK_TIMEOUT_MS=200 expect_exit 1 "up --wait-limit 3 gives up on a lock refused for 3 s" \
    timeout 20 "$MIGRATE" --database-url "$LOCK_URL" up --wait-limit 3
[ $((SECONDS - STARTED)) -le 6 ] && pass "it gave up within its limit and a margin" \
    || fail "up --wait-limit 3 took $((SECONDS - STARTED)) s"
expect_in "$WORK/err" "^ferrule-migrate: error: migration 019_api_base_url\\.sql failed: gave up after its lock was refused for [3-5] s \\([0-9]+ tries of 200 ms\\), the last time by pid $HOLD_PID \\(.*application \"integrations-reader\".*\\), idle in transaction, its transaction open for [0-9]+ s \\(the wait limit is 3 s\\)\$" \
    "the error names the session that held the lock"
expect_in "$WORK/err" "^ferrule-migrate: 019_api_base_url is not recorded: it was rolled back\$" "it is not recorded"
# a stop between tries ends up at once, as one during a try does
FERRULE_MIGRATE_LOCK_TIMEOUT_MS=200 "$MIGRATE" --database-url "$LOCK_URL" up 9>&- >"$WORK/stop.out" 2>"$WORK/stop.err" &
UPK=$!
for _ in $(seq 50); do
    grep -q "tries again" "$WORK/stop.err" && break
    sleep 0.1
done
kill -TERM "$UPK"
if ends_within 30 "$UPK"; then
    wait "$UPK"; RCK=$?
    [ "$RCK" -eq 143 ] && pass "up stopped by SIGTERM between tries exits 143" \
        || { fail "up stopped by SIGTERM between tries exited $RCK"; sed 's/^/    /' "$WORK/stop.err" >&2; }
    expect_in "$WORK/stop.err" "^ferrule-migrate: error: stopped by SIGTERM while applying 019_api_base_url: (its lock was refused and the migration's transaction rolled back, and it was waiting to try again|the statement was cancelled and the migration's transaction rolled back)\$" \
        "it says it stopped, and that the migration was rolled back"
else
    fail "up went on for 3 s after SIGTERM between tries"
    kill -KILL "$UPK"
    wait "$UPK" 2>/dev/null
fi
release_hold
unset HOLD_URL
psql_admin -c "DROP DATABASE IF EXISTS \"$LOCK_DB\" WITH (FORCE)" >/dev/null

# --- an autovacuum that holds the table of a step: the server cancels an autovacuum that blocks
# another session only from that session's deadlock check, after deadlock_timeout (1 s), so a
# step that gave up on its lock after 200 ms was refused until the vacuum ended by itself (minutes
# on a large table), and up failed past the Job's wait limit. A step held up by an autovacuum
# worker is tried again with a lock timeout past deadlock_timeout, and the server cancels the
# vacuum. A slow autovacuum: pending_authorizations with dead rows, its vacuum throttled to a page
# per 100 ms (a minute or more), started within a second by a naptime of 1 s, set only until it
# starts (the setting is the cluster's). The watch's first look may come after a try's 200 ms,
# and that try names no one: the try that names the autovacuum may be the second
AV_DB="${DB}_av"
AV_URL=$(url_for "$AV_DB")
psql_av () { "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -d "$AV_URL" "$@"; }
mkdir -p "$WORK/upto019"
cp "$MIGRATIONS_SRC"/00[1-9]_*.sql "$MIGRATIONS_SRC"/01[0-9]_*.sql "$WORK/upto019/"
psql_admin -c "CREATE DATABASE \"$AV_DB\"" >/dev/null || fail "could not create database $AV_DB"
expect_exit 0 "up to 019" "$MIGRATE" --database-url "$AV_URL" --dir "$WORK/upto019" up
psql_av -c "ALTER TABLE pending_authorizations SET (autovacuum_enabled = off);
            INSERT INTO pending_authorizations (state_hash, integration_id, provider, redirect_uri)
                SELECT md5 (i::text) || md5 ((-i)::text), 'av:' || i, 'p', 'https://app.example.test/cb'
                FROM generate_series (1, 30000) i;
            DELETE FROM pending_authorizations WHERE integration_id LIKE 'av:%' AND random () < 0.5;
            ALTER TABLE pending_authorizations SET (autovacuum_enabled = on, autovacuum_vacuum_cost_delay = 100,
                autovacuum_vacuum_cost_limit = 1, autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0,
                autovacuum_analyze_threshold = 2000000000)" >/dev/null \
    || fail "could not fill pending_authorizations for the autovacuum"
NAPTIME=$(psql_admin -c "SHOW autovacuum_naptime")
psql_admin -c "ALTER SYSTEM SET autovacuum_naptime = 1" -c "SELECT pg_reload_conf ()" >/dev/null \
    || fail "could not lower autovacuum_naptime (the admin role must be a superuser)"
AV_PID=
for _ in $(seq 300); do
    AV_PID=$(psql_av -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'
                         AND datname = current_database () AND query LIKE '%pending_authorizations%'")
    [ -n "$AV_PID" ] && break
    sleep 0.1
done
psql_admin -c "ALTER SYSTEM RESET autovacuum_naptime" -c "SELECT pg_reload_conf ()" >/dev/null \
    || fail "could not reset autovacuum_naptime (it was $NAPTIME)"
if [ -z "$AV_PID" ]; then
    fail "no autovacuum of pending_authorizations started within 30 s"
else
    STARTED=$SECONDS
    FERRULE_MIGRATE_LOCK_TIMEOUT_MS=200 expect_exit 0 "up applies 020 while an autovacuum holds pending_authorizations" \
        timeout 40 "$MIGRATE" --database-url "$AV_URL" up --wait-limit 20
    [ $((SECONDS - STARTED)) -le 10 ] && pass "it applied within 10 s" \
        || fail "up took $((SECONDS - STARTED)) s while the autovacuum held the table"
    expect_in "$WORK/err" "^ferrule-migrate: notice: 020_browser_binding: its transaction was refused a lock within 200 ms, held by pid $AV_PID \\(an autovacuum worker\\), .*; rolled back, it tries again in [0-9.]+ s with a lock timeout of [0-9]+ ms, past deadlock_timeout \\([0-9]+ ms\\), so that the server cancels the autovacuum \\(try [0-9]+\\)\$" \
        "up says the autovacuum held the table, and that it waits past deadlock_timeout"
    [ "$(psql_av -c "SELECT max(version) FROM schema_migrations")" = "$HIGHEST" ] \
        && pass "the schema is at $HIGHEST" || fail "the schema is at $(psql_av -c "SELECT max(version) FROM schema_migrations")"
fi
psql_admin -c "DROP DATABASE IF EXISTS \"$AV_DB\" WITH (FORCE)" >/dev/null

# --- 020: a connect's browser binding, kept as a SHA-256 (hex) or NULL (an unbound connect)
B20=$(psql_db -c "INSERT INTO pending_authorizations (state_hash, integration_id, provider, redirect_uri, browser_hash)
                  VALUES (repeat ('b1', 32), 'bind:a', 'p', 'https://app.example.test/cb', repeat ('c2', 32)),
                         (repeat ('b2', 32), 'bind:b', 'p', 'https://app.example.test/cb', NULL)
                  RETURNING 1" 2>&1 | wc -l)
BAD20=$(psql_db -c "INSERT INTO pending_authorizations (state_hash, integration_id, provider, redirect_uri, browser_hash)
                    VALUES (repeat ('b3', 32), 'bind:c', 'p', 'https://app.example.test/cb', 'not-a-hash')" 2>&1)
[ "$B20" = 2 ] && [[ "$BAD20" == *browser_hash_check* ]] \
    && pass "020: pending_authorizations.browser_hash takes a SHA-256 in hex or NULL, and nothing else" \
    || fail "020: browser_hash stored $B20 rows (expected 2) and answered \"$BAD20\" to a value that is no hash"

# --- a migration that fails rolls back, names its file and the server's error
mkdir -p "$WORK/dir"
cp "${FILES[@]}" "$WORK/dir/"
BROKEN=$(printf '%03d_broken' $((HIGHEST + 1)))
printf 'CREATE TABLE migrate_test_partial (a int);\nCREATE TABEL oops (a int);\n' >"$WORK/dir/$BROKEN.sql"
expect_exit 1 "up with a broken migration" migrate --dir "$WORK/dir" up
expect_in "$WORK/err" "$BROKEN\\.sql failed at line 2: syntax error at or near \"TABEL\"" \
    "the failure names the file, the line and the server's message"
PARTIAL=$(psql_db -c "SELECT to_regclass('migrate_test_partial') IS NULL")
[ "$PARTIAL" = "t" ] && pass "the broken migration was rolled back" || fail "the broken migration left a table"
ROWS=$(psql_db -c "SELECT count(*) FROM schema_migrations")
[ "$ROWS" = "$NFILES" ] && pass "the broken migration was not recorded" || fail "schema_migrations has $ROWS rows"
expect_exit 7 "status --dir with the broken migration pending" migrate --dir "$WORK/dir" status
rm "$WORK/dir/$BROKEN.sql"

# --- a statement_timeout the database gives its sessions (a guard set for the services) does not
# cancel a migration: one that takes 2 s, in a transaction and without one, is applied
SLOW=$(printf '%03d_slow' $((HIGHEST + 1)))
SLOW_NT=$(printf '%03d_slow_nt' $((HIGHEST + 2)))
printf 'SELECT pg_sleep (2);\n' >"$WORK/dir/$SLOW.sql"
printf -- '-- ferrule-migrate: no-transaction\nSELECT pg_sleep (2);\n' >"$WORK/dir/$SLOW_NT.sql"
psql_db -c "ALTER DATABASE \"$DB\" SET statement_timeout = '1s'" >/dev/null
expect_exit 0 "up with 2 s migrations on a database whose statement_timeout is 1 s" migrate --dir "$WORK/dir" up
expect_in "$WORK/out" "^applied $SLOW " "the slow migration in a transaction is applied"
expect_in "$WORK/out" "^applied $SLOW_NT " "the slow migration without one is applied"
psql_db -c "ALTER DATABASE \"$DB\" RESET statement_timeout" >/dev/null
psql_db -c "DELETE FROM schema_migrations WHERE version > $HIGHEST" >/dev/null
rm "$WORK/dir/$SLOW.sql" "$WORK/dir/$SLOW_NT.sql"

# --- what the server says while a migration runs (RAISE, "does not exist, skipping") reaches the
# operator in the tool's words, naming the migration, and the log; never libpq's bare lines
NOISY=$(printf '%03d_noisy' $((HIGHEST + 1)))
printf '%s\n' "DO \$\$ BEGIN RAISE NOTICE 'migrate-test notice'; RAISE WARNING 'migrate-test warning'; END \$\$;" \
    'SELECT 1/0;' >"$WORK/dir/$NOISY.sql"
expect_exit 1 "up with a migration that raises a notice and a warning, then fails" migrate --dir "$WORK/dir" up
expect_in "$WORK/err" "^ferrule-migrate: notice: $NOISY: the server said: migrate-test notice\$" \
    "a notice is one line naming the migration"
expect_in "$WORK/err" "^ferrule-migrate: warning: $NOISY: the server said: migrate-test warning\$" \
    "a warning is one line naming the migration"
expect_in "$WORK/err" '"level":"warning".*"msg":"the database server said while applying '"$NOISY"': migrate-test warning"' \
    "the warning is in the log too"
if grep -Eq '^(NOTICE|WARNING): ' "$WORK/err"; then
    fail "libpq printed the server's notices itself"
    sed 's/^/    /' "$WORK/err" >&2
else
    pass "no bare NOTICE: or WARNING: line"
fi
rm "$WORK/dir/$NOISY.sql"

# --- a migration whose first line is "-- ferrule-migrate: no-transaction" runs statement by
# statement: CREATE INDEX CONCURRENTLY works, and while it waits for a transaction that wrote to
# the table, other writers go on (a plain CREATE INDEX would queue them behind it)
CONC=$(printf '%03d_concurrent' $((HIGHEST + 1)))
UNIQ=$(printf '%03d_unique' $((HIGHEST + 2)))
psql_db -c "CREATE TABLE migrate_test_conc (a int, b text);
            INSERT INTO migrate_test_conc SELECT g, 'x' FROM generate_series (1, 1000) g" >/dev/null \
    || fail "could not make the table the concurrent build reads"
printf '%s\n' '-- ferrule-migrate: no-transaction' '-- a comment; with a semicolon' \
    'CREATE INDEX CONCURRENTLY IF NOT EXISTS migrate_test_conc_a ON migrate_test_conc (a);' '' \
    "COMMENT ON INDEX migrate_test_conc_a IS 'built; concurrently';" >"$WORK/dir/$CONC.sql"
# the writer's transaction stays open until the build is seen waiting for it (one open for a fixed
# 4 s could end before an up started late on a loaded machine got there)
hold_open conc-writer "BEGIN; INSERT INTO migrate_test_conc VALUES (0, 'open');"
migrate --dir "$WORK/dir" up 9>&- >"$WORK/conc.out" 2>"$WORK/conc.err" &
UPC=$!
WAITING=0
for _ in $(seq 300); do
    WAITING=$(psql_db -c "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX CONCURRENTLY%'
                          AND wait_event_type = 'Lock'")
    [ "$WAITING" = 1 ] && break
    sleep 0.1
done
[ "$WAITING" = 1 ] && pass "the concurrent build waits for the open transaction" \
    || fail "no CREATE INDEX CONCURRENTLY was seen waiting for the open transaction"
out=$(psql_db -c "SET lock_timeout = '1s'; INSERT INTO migrate_test_conc VALUES (-1, 'during') RETURNING a" 2>&1)
[ "$out" = -1 ] && pass "a writer is not held while the index is built" || fail "a writer during the build: $out"
release_hold
wait "$UPC"; RCC=$?
if [ "$RCC" -eq 0 ]; then
    pass "up applies a migration marked no-transaction"
else
    fail "up with $CONC exited $RCC"
    sed 's/^/    /' "$WORK/conc.out" "$WORK/conc.err" >&2
fi
[ "$(psql_db -c "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass ('migrate_test_conc_a')")" = t ] \
    && pass "its index is built and valid" || fail "index migrate_test_conc_a is missing or invalid"
[ "$(psql_db -c "SELECT obj_description ('migrate_test_conc_a'::regclass)")" = "built; concurrently" ] \
    && pass "a ';' in a string or a comment ends no statement" || fail "the comment on the index is not the file's"
[ "$(psql_db -c "SELECT count(*) FROM schema_migrations WHERE version = $((HIGHEST + 1))")" = 1 ] \
    && pass "it is recorded once its last statement ran" || fail "$CONC is not recorded"

# --- a concurrent build that fails leaves an invalid index behind; the next up drops it and
# builds it again, instead of skipping it for good because it "exists"
printf '%s\n' '-- ferrule-migrate: no-transaction' \
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS migrate_test_conc_b ON migrate_test_conc (b);" \
    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS migrate_test_conc_u ON migrate_test_conc (a);" >"$WORK/dir/$UNIQ.sql"
psql_db -c "INSERT INTO migrate_test_conc VALUES (1, 'a duplicate')" >/dev/null
expect_exit 1 "up with a unique index over a duplicate" migrate --dir "$WORK/dir" up
expect_in "$WORK/err" "$UNIQ\\.sql failed at line 3: could not create unique index \"migrate_test_conc_u\"" \
    "the failure names the file and the line of the statement"
expect_in "$WORK/err" "$UNIQ is not recorded, and runs without a transaction: the 1 statement before the failed one stays applied; fix it, then run ferrule-migrate up again" \
    "it says the statement before it stays applied, and what to do"
[ "$(psql_db -c "SELECT string_agg (c.relname || '=' || i.indisvalid, ',' ORDER BY c.relname) FROM pg_index i
                 JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname IN ('migrate_test_conc_b', 'migrate_test_conc_u')")" \
  = "migrate_test_conc_b=true,migrate_test_conc_u=false" ] \
    && pass "the failed build left its index invalid, the one before it valid" \
    || fail "after the failed build: $(psql_db -c "SELECT string_agg (relname, ',') FROM pg_class WHERE relname LIKE 'migrate_test_conc%'")"
psql_db -c "DELETE FROM migrate_test_conc WHERE b = 'a duplicate'" >/dev/null
expect_exit 0 "up again after the duplicate is gone" migrate --dir "$WORK/dir" up
expect_in "$WORK/err" "^ferrule-migrate: notice: $UNIQ: dropping index \"migrate_test_conc_u\", left invalid by a build that did not finish, to build it again\$" \
    "up says it drops the invalid index"
[ "$(psql_db -c "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass ('migrate_test_conc_u')")" = t ] \
    && pass "the index is built again, valid" || fail "migrate_test_conc_u is still invalid or missing"
if grep -q 'dropping index "migrate_test_conc_b"' "$WORK/err"; then
    fail "up dropped a valid index"
else
    pass "the valid index was kept"
fi

# --- a no-transaction migration that ends inside a quote runs nothing
OPEN=$(printf '%03d_open' $((HIGHEST + 3)))
printf '%s\n' '-- ferrule-migrate: no-transaction' 'CREATE TABLE migrate_test_open (a int);' \
    "COMMENT ON TABLE migrate_test_open IS 'never closed;" >"$WORK/dir/$OPEN.sql"
expect_exit 1 "up with a no-transaction migration left open" migrate --dir "$WORK/dir" up
expect_in "$WORK/err" "$OPEN\\.sql failed at line 3: it ends inside a quoted string" "the failure says what was left open, and where"
expect_in "$WORK/err" "$OPEN is not recorded and none of it is applied" "it says nothing was applied"
[ "$(psql_db -c "SELECT to_regclass ('migrate_test_open') IS NULL")" = t ] \
    && pass "none of its statements ran" || fail "a statement before the open quote ran"
rm "$WORK/dir/$OPEN.sql"
# --- nor may one open a transaction of its own: its statements would not be committed one by one
printf '%s\n' '-- ferrule-migrate: no-transaction' 'BEGIN;' 'CREATE TABLE migrate_test_begun (a int);' >"$WORK/dir/$OPEN.sql"
expect_exit 1 "up with a no-transaction migration that opens a transaction" migrate --dir "$WORK/dir" up
expect_in "$WORK/err" "$OPEN\\.sql failed at line 2: it opened a transaction, which a migration marked \"ferrule-migrate: no-transaction\" must not do" \
    "the failure names the BEGIN"
[ "$(psql_db -c "SELECT to_regclass ('migrate_test_begun') IS NULL")" = t ] \
    && pass "nothing after the BEGIN ran" || fail "a statement after the BEGIN ran"
rm "$WORK/dir/$OPEN.sql"


# --- a statement that waits for another session says so once it has waited 5 s: whom it waits
# for (the session a concurrent build must outlast, left idle in its transaction), how far the
# build is, what ends the wait; without a limit it goes on once that transaction ends
WATCHED=$(printf '%03d_watched' $((HIGHEST + 3)))
printf '%s\n' '-- ferrule-migrate: no-transaction' 'SELECT 1;' \
    'CREATE INDEX CONCURRENTLY IF NOT EXISTS migrate_test_conc_w ON migrate_test_conc (b, a);' >"$WORK/dir/$WATCHED.sql"
hold_open held-open "BEGIN; INSERT INTO migrate_test_conc VALUES (-5, 'held');"
migrate --dir "$WORK/dir" up 9>&- >"$WORK/watch.out" 2>"$WORK/watch.err" &
UPW=$!
for _ in $(seq 150); do
    grep -q "has waited" "$WORK/watch.err" && break
    sleep 0.1
done
expect_in "$WORK/watch.err" "^ferrule-migrate: notice: $WATCHED: the statement at line 3 has waited ([5-9]|[1-9][0-9]) s for 1 other session, the oldest pid $HOLD_PID \\(user \"[^\"]+\", application \"held-open\", [^)]+\\), idle in transaction, its transaction open for [0-9]+ s; waiting for writers before build; end that session's transaction \\(SELECT pg_terminate_backend \\($HOLD_PID\\) ends the session\\) and it goes on by itself\$" \
    "a waiting concurrent build names the session it waits for, its phase, and what ends the wait"
if kill -0 "$UPW" 2>/dev/null; then pass "without a limit, up goes on waiting"; else fail "up ended while the session was open"; fi
release_hold
wait "$UPW"; RCW=$?
[ "$RCW" -eq 0 ] && pass "up ends once the transaction it waited for ends" \
    || { fail "up with $WATCHED exited $RCW"; sed 's/^/    /' "$WORK/watch.out" "$WORK/watch.err" >&2; }
[ "$(psql_db -c "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass ('migrate_test_conc_w')")" = t ] \
    && pass "the index it waited to build is valid" || fail "migrate_test_conc_w is missing or invalid"

# --- with a wait limit, a statement that waited that long for others is cancelled, and up fails
# naming the session: a migration in a transaction is rolled back, and the writer that queued
# behind its lock meanwhile (counted in the notice) goes on. (From here to the failing looks, with
# no lock timeout, as --lock-timeout 0 gives: a step that waits for its lock as long as the watch
# lets it, as a concurrent index build always does.)
export FERRULE_MIGRATE_LOCK_TIMEOUT_MS=0
ALTERED=$(printf '%03d_altered' $((HIGHEST + 4)))
printf '%s\n' 'ALTER TABLE migrate_test_conc ADD COLUMN c int;' >"$WORK/dir/$ALTERED.sql"
hold_open held-open "BEGIN; SELECT count(*) FROM migrate_test_conc;"
migrate --dir "$WORK/dir" up --wait-limit 3 9>&- >"$WORK/limit.out" 2>"$WORK/limit.err" &
UPL=$!
for _ in $(seq 50); do
    [ "$(psql_db -c "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'ALTER TABLE migrate_test_conc%'
                     AND wait_event_type = 'Lock'")" = 1 ] && break
    sleep 0.1
done
psql_db -c "INSERT INTO migrate_test_conc VALUES (-6, 'queued')" 9>&- >/dev/null 2>"$WORK/queued.err" &
QUEUED=$!
wait "$UPL"; RCL=$?
[ "$RCL" -eq 1 ] && pass "up --wait-limit 3 gives up (exit 1)" \
    || { fail "up --wait-limit 3 exited $RCL"; sed 's/^/    /' "$WORK/limit.out" "$WORK/limit.err" >&2; }
expect_in "$WORK/limit.err" "^ferrule-migrate: notice: $ALTERED: its transaction has waited ([3-9]|[1-9][0-9]) s for 1 other session, the oldest pid $HOLD_PID \\(.*application \"held-open\".*\\), idle in transaction, its transaction open for [0-9]+ s; 1 session waits behind it; end that session's transaction .* or up gives up at 3 s of waiting\$" \
    "the notice counts the writer queued behind the migration's lock"
expect_in "$WORK/limit.err" "^ferrule-migrate: error: migration $ALTERED\\.sql failed: gave up after it waited ([3-9]|[1-9][0-9]) s for 1 other session, the oldest pid $HOLD_PID \\(.*\\), idle in transaction, its transaction open for [0-9]+ s \\(the wait limit is 3 s\\)\$" \
    "the error names the session it gave up on"
expect_in "$WORK/limit.err" "^ferrule-migrate: detail: the statement was cancelled and the migration's transaction rolled back\$" \
    "the detail says the migration was rolled back"
expect_in "$WORK/limit.err" "^ferrule-migrate: hint: end that session's transaction, or terminate it" "the hint says what to do"
expect_in "$WORK/limit.err" "^ferrule-migrate: $ALTERED is not recorded: it was rolled back\$" "it is not recorded"
wait "$QUEUED" && pass "the writer queued behind it went on" || { fail "the queued writer failed"; cat "$WORK/queued.err" >&2; }
[ "$(psql_db -c "SELECT count(*) FROM information_schema.columns WHERE table_name = 'migrate_test_conc' AND column_name = 'c'")" = 0 ] \
    && pass "its change was rolled back" || fail "column c exists after the cancelled migration"

# --- a stop while a migration's statement waits for a lock (SIGINT: Ctrl-C; SIGTERM: Kubernetes
# ending the Job's pod) cancels the statement on the server: PostgreSQL does not notice a client
# gone while its backend waits for a lock, and that backend would stay queued for the lock (every
# writer of the table queued behind it) holding the migration lock (the next up waiting for it
# for ever). up says so and exits 128 + the signal's number. A client killed outright (SIGKILL)
# is noticed by the server within seconds too (client_connection_check_interval, PostgreSQL 14+).
alter_waiting () {
    psql_db -c "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database ()
                AND query LIKE 'ALTER TABLE migrate_test_conc%' AND wait_event_type = 'Lock'"
}
alter_running () {
    psql_db -c "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database ()
                AND query LIKE 'ALTER TABLE migrate_test_conc%' AND state = 'active'"
}
migration_lock_held () {
    psql_db -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database ())"
}
# ends what a failed check left on the server, so that the checks after it do not wait behind it
end_orphans () {
    psql_db -c "SELECT pg_terminate_backend (pid) FROM pg_stat_activity WHERE datname = current_database ()
                AND application_name = 'ferrule-migrate'" >/dev/null
}
SERVER_VERSION=$(psql_db -c "SHOW server_version_num")
for sig in INT TERM KILL; do
    if [ "$sig" = KILL ] && [ "$SERVER_VERSION" -lt 140000 ]; then
        echo "skipped: SIGKILL of up is noticed from PostgreSQL 14 on only (this is $SERVER_VERSION)"
        continue
    fi
    # the program itself, not the function: $! must be its pid, for the signal to reach it
    "$MIGRATE" --database-url "$DB_URL" --dir "$WORK/dir" up 9>&- >"$WORK/stop.out" 2>"$WORK/stop.err" &
    UPS=$!
    for _ in $(seq 100); do
        [ "$(alter_waiting)" = 1 ] && break
        sleep 0.1
    done
    [ "$(alter_waiting)" = 1 ] || fail "SIG$sig: no ALTER of up's was seen waiting for the lock"
    kill -"$sig" "$UPS"
    # bounded: an up that goes on waiting would wait as long as the session stays open
    if ! ends_within 100 "$UPS"; then
        fail "up went on for 10 s after SIG$sig"
        kill -KILL "$UPS"
    fi
    { wait "$UPS"; RCS=$?; } 2>/dev/null       # (no "Killed" line from bash after SIGKILL)
    if [ "$sig" != KILL ]; then
        WANT=$((128 + $(kill -l "$sig")))
        [ "$RCS" -eq "$WANT" ] && pass "up stopped by SIG$sig exits $WANT" \
            || { fail "up stopped by SIG$sig exited $RCS"; sed 's/^/    /' "$WORK/stop.out" "$WORK/stop.err" >&2; }
        expect_in "$WORK/stop.err" "^ferrule-migrate: error: stopped by SIG$sig while applying $ALTERED: the statement was cancelled and the migration's transaction rolled back\$" \
            "SIG$sig: up says it stopped, and what became of the migration"
    fi
    for _ in $(seq 100); do
        [ "$(alter_running)" = 0 ] && [ "$(migration_lock_held)" = 0 ] && break
        sleep 0.1
    done
    [ "$(alter_running)" = 0 ] && pass "after SIG$sig, no ALTER of up's is left on the server" \
        || fail "after SIG$sig, up's ALTER still waits on the server"
    [ "$(migration_lock_held)" = 0 ] && pass "after SIG$sig, the migration lock is free" \
        || fail "after SIG$sig, the migration lock is still held"
    expect_exit 1 "after SIG$sig, the next up --wait-limit 3 gets the migration lock, and gives up on the session" \
        timeout 15 "$MIGRATE" --database-url "$DB_URL" --dir "$WORK/dir" up --wait-limit 3
    end_orphans
done

# --- a look at what the statement waits for that fails does not stop the clock: the time counts
# as waiting for the sessions the last look saw, so the wait limit still ends the wait. (Here the
# looks fail from the second on: a view of that name in "public", on a search_path that puts
# pg_catalog last, has a column of another type.)
PGOPTIONS="-c search_path=public,pg_catalog" "$MIGRATE" --database-url "$DB_URL" --dir "$WORK/dir" up --wait-limit 6 \
    9>&- >"$WORK/blind.out" 2>"$WORK/blind.err" &
UPB=$!
for _ in $(seq 100); do
    [ "$(psql_db -c "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database ()
                     AND application_name = 'ferrule-migrate' AND query LIKE 'WITH b AS%'")" = 1 ] && break
    sleep 0.1
done
psql_db -c "CREATE VIEW public.pg_stat_progress_create_index AS
            SELECT 'x'::text AS pid, ''::text AS phase, 0::bigint AS blocks_done, 0::bigint AS blocks_total" >/dev/null
if ends_within 150 "$UPB"; then
    wait "$UPB"; RCB=$?
    [ "$RCB" -eq 1 ] && pass "with its looks failing, up still gives up at the wait limit (exit 1)" \
        || { fail "with its looks failing, up exited $RCB"; sed 's/^/    /' "$WORK/blind.out" "$WORK/blind.err" >&2; }
    expect_in "$WORK/blind.err" "^ferrule-migrate: notice: $ALTERED: could not look at what its transaction waits for: .*operator does not exist" \
        "up says once why it could not look"
    expect_in "$WORK/blind.err" "^ferrule-migrate: error: migration $ALTERED\\.sql failed: gave up after it waited ([6-9]|[1-9][0-9]) s for 1 other session, the oldest pid $HOLD_PID " \
        "the error names the session the last look saw"
else
    fail "with its looks failing, up --wait-limit 6 was still waiting after 15 s"
    kill -KILL "$UPB"
    wait "$UPB" 2>/dev/null
    sed 's/^/    /' "$WORK/blind.err" >&2
fi
psql_db -c "DROP VIEW public.pg_stat_progress_create_index" >/dev/null
end_orphans
release_hold
unset FERRULE_MIGRATE_LOCK_TIMEOUT_MS
expect_exit 2 "--lock-timeout outside up" migrate --lock-timeout 100 status
FERRULE_MIGRATE_LOCK_TIMEOUT_MS=2s expect_exit 2 "FERRULE_MIGRATE_LOCK_TIMEOUT_MS that is not milliseconds" migrate up
expect_in "$WORK/err" "invalid FERRULE_MIGRATE_LOCK_TIMEOUT_MS \"2s\"" "the variable is named"
expect_exit 2 "--wait-limit outside up" migrate --wait-limit 3 status
expect_exit 2 "a negative --wait-limit" migrate --dir "$WORK/dir" up --wait-limit -1
FERRULE_MIGRATE_WAIT_LIMIT_S=soon expect_exit 2 "FERRULE_MIGRATE_WAIT_LIMIT_S that is not seconds" migrate --dir "$WORK/dir" up
expect_in "$WORK/err" "invalid FERRULE_MIGRATE_WAIT_LIMIT_S \"soon\"" "the variable is named"
FERRULE_MIGRATE_WAIT_LIMIT_S=30 expect_exit 0 "up once the session is gone" migrate --dir "$WORK/dir" up
[ "$(psql_db -c "SELECT count(*) FROM information_schema.columns WHERE table_name = 'migrate_test_conc' AND column_name = 'c'")" = 1 ] \
    && pass "then it applies" || fail "column c is missing after up"

rm "$WORK/dir/$CONC.sql" "$WORK/dir/$UNIQ.sql" "$WORK/dir/$WATCHED.sql" "$WORK/dir/$ALTERED.sql"
psql_db -c "DELETE FROM schema_migrations WHERE version > $HIGHEST; DROP TABLE migrate_test_conc" >/dev/null

# --- an edited file is drift
printf -- '-- an edit\n' >>"$WORK/dir/$FIRST.sql"
expect_exit 6 "verify --dir with an edited file" migrate --dir "$WORK/dir" verify
expect_exit 6 "up --dir with an edited file" migrate --dir "$WORK/dir" up
expect_in "$WORK/err" "restore the original $FIRST\\.sql" "up's refusal says how to get out"

# --- a tampered checksum row is drift
psql_db -c "UPDATE schema_migrations SET checksum = 'x' WHERE version = (SELECT min(version) FROM schema_migrations)" >/dev/null
expect_exit 6 "up after tampering" migrate up
expect_in "$WORK/err" "applied with checksum x but its file now has checksum ${FILE_SUM:0:12}\$" \
    "up names both checksums' first 12 characters"
expect_exit 6 "verify after tampering" migrate verify
expect_exit 6 "status after tampering" migrate status
# wait stops at once, as verify does: no waiting mends drift, and an init container waited its whole
# timeout (300 s) to exit 5, "not ready", with the hint to run up, which refuses it
WAIT_START=$(date +%s)
expect_exit 6 "wait after tampering" migrate wait --timeout 60
[ $(( $(date +%s) - WAIT_START )) -lt 30 ] && pass "wait after tampering did not wait out its timeout" \
    || fail "wait after tampering took $(( $(date +%s) - WAIT_START )) s of its 60"
expect_in "$WORK/err" 'hint: .*ferrule-migrate verify' "wait's hint is verify"

# --- an unreachable database, and a password that must never be printed
SECRET_URL="postgresql://ferrule:Sup3rSecretPw@127.0.0.1:1/nowhere"
expect_exit 5 "status against a closed port" "$MIGRATE" --database-url "$SECRET_URL" status
if grep -q Sup3rSecretPw "$WORK/out" "$WORK/err"; then fail "the password was printed"; else pass "the password was not printed"; fi
expect_exit 5 "wait against a closed port" "$MIGRATE" --database-url "$SECRET_URL" wait --timeout 1
if grep -q Sup3rSecretPw "$WORK/out" "$WORK/err"; then fail "wait printed the password"; else pass "wait did not print the password"; fi
expect_exit 2 "an unparsable URL" "$MIGRATE" --database-url "postgresql://u:Sup3r%zzSecretPw@host/db" status
if grep -q Sup3r "$WORK/out" "$WORK/err"; then fail "the password was printed"; else pass "a bad URL's password was not printed"; fi
# another scheme's URL, or one without its scheme, is no database name: it was taken for one and
# printed whole ("could not connect to the database \"postgresql+psycopg2://u:...\"")
for kind in "another scheme's" "a scheme-less"; do
    bad="postgresql+psycopg2://u:Sup3rSecretPw@127.0.0.1:1/db"
    [ "$kind" = "a scheme-less" ] && bad="u:Sup3rSecretPw@127.0.0.1:1/db"
    expect_exit 2 "$kind URL" "$MIGRATE" --database-url "$bad" status
    expect_in "$WORK/err" "it is not shown: it may hold a password" "$kind URL is refused, unshown"
    if grep -q Sup3r "$WORK/out" "$WORK/err"; then fail "its password was printed"; else pass "its password was not printed"; fi
done
if [ -n "$PROBE" ]; then
    expect_exit 1 "schema_check against a closed port" "$PROBE" "$SECRET_URL"
    expect_in "$WORK/out" "^database_unavailable " "schema_check says the database is unavailable"
fi

# --- grant-runtime takes up's migration lock: up grants again at its end, and two sessions
# granting on the same tables at once failed one with "tuple concurrently updated". While
# another session holds the lock it waits, says so, and grants nothing
RT2="${DB}_rt2"
GL_DB="${DB}_grantlock"
GL_URL=$(url_for "$GL_DB")
psql_admin -c "CREATE DATABASE \"$GL_DB\"" >/dev/null || fail "could not create database $GL_DB"
gl_migrate () { "$MIGRATE" --database-url "$GL_URL" "$@"; }
expect_exit 0 "up in a database of its own" gl_migrate up --no-fill
HOLD_URL="$GL_URL" hold_open lock-holder "BEGIN; SELECT pg_advisory_xact_lock($LOCK_KEY);"
gl_migrate grant-runtime "$RT2" 9>&- >"$WORK/gr.out" 2>"$WORK/gr.err" &
GR=$!
for _ in $(seq 300); do
    grep -q "waiting for it to finish" "$WORK/gr.err" 2>/dev/null && break
    kill -0 "$GR" 2>/dev/null || break
    sleep 0.1
done
expect_in "$WORK/gr.err" "waiting for it to finish" "grant-runtime waits for the migration lock"
[ "$(psql_db -c "SELECT count(*) FROM pg_roles WHERE rolname = '$RT2'")" = 0 ] \
    && pass "grant-runtime granted nothing while waiting" || fail "grant-runtime created its role without the lock"
release_hold
wait "$GR"; RC=$?
[ "$RC" -eq 0 ] && pass "grant-runtime exits 0 once the lock is free" \
    || { fail "grant-runtime exited $RC after the lock was freed"; cat "$WORK/gr.err" >&2; }
# and run beside up (which grants the recorded roles again), neither fails
BAD=0
for i in $(seq 8); do
    gl_migrate up --no-fill >"$WORK/cu.out" 2>"$WORK/cu.err" &
    CU=$!
    gl_migrate grant-runtime "$RT2" >"$WORK/cg.out" 2>"$WORK/cg.err"; RCG=$?
    wait "$CU"; RCU=$?
    if [ "$RCU" -ne 0 ] || [ "$RCG" -ne 0 ]; then
        BAD=$((BAD + 1))
        echo "round $i: up exited $RCU, grant-runtime $RCG" >&2
        grep -h "error" "$WORK/cu.err" "$WORK/cg.err" | head -n 2 >&2
    fi
done
[ "$BAD" -eq 0 ] && pass "up and grant-runtime side by side both exit 0, 8 times" \
    || fail "up and grant-runtime side by side: $BAD of 8 rounds failed one"

# --- on a schema a newer build applied (an older release's Job run again, as a rollback's sync
# does), the runtime roles' rights stay as that build gave them: its tables' rules are its own (an
# older build's grants gave UPDATE on every table it did not know as append-only)
psql_gl () { "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -d "$GL_URL" "$@"; }
NEWER=$((HIGHEST + 1))
psql_gl -c "CREATE TABLE future_log (a int); GRANT SELECT, INSERT ON future_log TO \"$RT2\";
            INSERT INTO schema_migrations (version, name, checksum, applied_by)
                VALUES ($NEWER, 'future_log', 'x', 'a newer build')" >/dev/null \
    || fail "could not make the schema a newer build's"
expect_exit 0 "up on a schema newer than this build" gl_migrate up --no-fill
expect_in "$WORK/out" "^schema is up to date at version $NEWER \\(newer than this build's $HIGHEST\\)" \
    "up says the schema is newer"
[ "$(psql_gl -c "SELECT has_table_privilege ('$RT2', 'future_log', 'UPDATE')")" = f ] \
    && pass "up left the newer build's grants on its table" || fail "up gave the runtime role UPDATE on a newer build's table"
# verify said "schema matches this build at version 25" of a build at 24
expect_exit 0 "verify on a schema newer than this build" gl_migrate verify
expect_in "$WORK/out" "^schema is at version $NEWER, newer than this build's $HIGHEST, and every migration of this build is applied as its file says\$" \
    "verify says the schema is newer than the build"
expect_exit 6 "grant-runtime on a schema newer than this build" gl_migrate grant-runtime "$RT2"
expect_in "$WORK/err" "schema is at version $NEWER, newer than this build's $HIGHEST" "grant-runtime says why it refuses"
[ "$(psql_gl -c "SELECT has_table_privilege ('$RT2', 'future_log', 'UPDATE')")" = f ] \
    && pass "grant-runtime left them too" || fail "grant-runtime gave the runtime role UPDATE on a newer build's table"
psql_gl -c "DELETE FROM schema_migrations WHERE version = $NEWER; DROP TABLE future_log" >/dev/null

# --- prune-events (the rest is it_migrate_prune's): deletion is asked for explicitly, its
# options belong to it, a schema before 006 has nothing to prune, an unreachable database is 5
expect_exit 2 "prune-events without --older-than" migrate prune-events
expect_in "$WORK/err" 'prune-events needs --older-than=DAYS: .*there is no default' \
    "prune-events says --older-than is needed and has no default"
for days in 0 36501 -3 30d ""; do
    expect_exit 2 "prune-events --older-than=\"$days\"" migrate prune-events --older-than="$days"
    expect_in "$WORK/err" "invalid --older-than \"$days\": give days from 1 to 36500" "--older-than=\"$days\" is refused"
done
expect_exit 2 "--older-than given to status" migrate status --older-than=30
expect_in "$WORK/err" '--older-than applies to prune-events only' "--older-than belongs to prune-events"
expect_exit 2 "--batch given to status" migrate status --batch=5
expect_in "$WORK/err" '--batch applies to rekey, fill-route-hashes and prune-events only' "--batch names prune-events"
expect_exit 2 "prune-events --batch=0" migrate prune-events --older-than=30 --batch=0
expect_exit 0 "prune-events with nothing old" migrate prune-events --older-than=30 --batch=10
expect_in "$WORK/out" '^pruned 0 events and 0 deliveries older than 30 days$' "prune-events says what it did"
expect_exit 0 "prune-events --older-than=36500" migrate prune-events --older-than=36500
expect_exit 5 "prune-events against a closed port" "$MIGRATE" --database-url "$SECRET_URL" prune-events --older-than=30
no_secret_in_prune () {
    if grep -q Sup3rSecretPw "$WORK/out" "$WORK/err"; then fail "prune-events printed the password"; else pass "prune-events did not print the password"; fi
}
no_secret_in_prune
"$MIGRATE" --help >"$WORK/out" 2>&1
expect_in "$WORK/out" '^  prune-events --older-than=DAYS \[--batch=N\]$' "--help lists prune-events"
OLD5_DB="${DB}_005"
OLD5_URL=$(url_for "$OLD5_DB")
mkdir -p "$WORK/upto005"
cp "$MIGRATIONS_SRC"/00[1-5]_*.sql "$WORK/upto005/"
psql_admin -c "CREATE DATABASE \"$OLD5_DB\"" >/dev/null || fail "could not create database $OLD5_DB"
expect_exit 0 "up to 005" "$MIGRATE" --database-url "$OLD5_URL" --dir "$WORK/upto005" up
expect_exit 7 "prune-events on a schema before 006" "$MIGRATE" --database-url "$OLD5_URL" prune-events --older-than=30
expect_in "$WORK/err" 'no table "events": it is not at migration 006 yet' "prune-events says the schema is too old"
psql_admin -c "DROP DATABASE IF EXISTS \"$OLD5_DB\" WITH (FORCE)" >/dev/null
# a stop while it retries a statement that found events locked (an ALTER TABLE's lock, held in an
# open transaction): it never queues behind that lock for long (lock_timeout), and SIGTERM ends it
# between two tries, saying so, with 143
psql_db -c "INSERT INTO events (type, integration_id, provider, diagnosis, created_at)
            VALUES ('disconnected', 'stop:box', 'fakebox', 'disconnected', now () - interval '40 days')" >/dev/null
hold_open prune-blocker "BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE;"
"$MIGRATE" --database-url "$DB_URL" prune-events --older-than=30 9>&- >"$WORK/pr.out" 2>"$WORK/pr.err" &
PR=$!
for _ in $(seq 100); do
    grep -q "trying it again" "$WORK/pr.err" 2>/dev/null && break
    sleep 0.1
done
grep -q "trying it again" "$WORK/pr.err" && pass "prune-events gave up a lock wait and tries again" \
    || { fail "prune-events did not say it tries again"; cat "$WORK/pr.err" >&2; }
kill -TERM "$PR"
ends_within 50 "$PR" || fail "prune-events did not end within 5 s of SIGTERM"
wait "$PR"; RC=$?
[ "$RC" -eq 143 ] && pass "prune-events stopped by SIGTERM exits 143" || fail "prune-events stopped by SIGTERM exited $RC"
expect_in "$WORK/pr.out" '^pruned 0 events and 0 deliveries older than 30 days$' "prune-events says what it did before the stop"
expect_in "$WORK/pr.err" 'error: stopped by SIGTERM while pruning events' "prune-events says where SIGTERM stopped it"
release_hold
expect_exit 0 "prune-events once the lock is gone" migrate prune-events --older-than=30
expect_in "$WORK/out" '^pruned 1 event and 0 deliveries older than 30 days$' "prune-events deletes it then"

# --- usage
expect_exit 2 "an unknown command" "$MIGRATE" frobnicate
expect_in "$WORK/err" 'unknown command "frobnicate"' "a plain word is quoted"
expect_exit 0 "--help" "$MIGRATE" --help

# --- a usage error never echoes a value that may hold the password: a misspelled or ambiguous
# option's value, or a URL given without --database-url (before or after the command)
no_secret_in_err () {
    if grep -q Sup3rSecretPw "$WORK/err" "$WORK/out"; then
        fail "$1 printed the password"
        sed 's/^/    /' "$WORK/err" >&2
    else
        pass "$1 did not print the password"
    fi
}
expect_exit 2 "a misspelled --database-url" "$MIGRATE" --database-uri="$SECRET_URL" status
no_secret_in_err "a misspelled --database-url"
expect_in "$WORK/err" 'unknown option "--database-uri"' "the misspelled option is named, without its value"
expect_exit 2 "an ambiguous abbreviation" "$MIGRATE" --d="$SECRET_URL" status
no_secret_in_err "an ambiguous abbreviation"
expect_in "$WORK/err" 'option "--d" is ambiguous' "the ambiguous option is named, without its value"
expect_exit 2 "a URL after the command" "$MIGRATE" up "$SECRET_URL"
no_secret_in_err "a URL after the command"
expect_exit 2 "a URL as the command" "$MIGRATE" "$SECRET_URL"
no_secret_in_err "a URL as the command"
expect_exit 2 "a URL before the command" "$MIGRATE" "$SECRET_URL" up
no_secret_in_err "a URL before the command"
expect_exit 2 "a key=value string after the command" "$MIGRATE" status "host=h password=Sup3rSecretPw"
no_secret_in_err "a key=value string after the command"
# against the test's database: the URL was taken for a role's name, quoted, and created as one
expect_exit 2 "a URL as grant-runtime's role" migrate grant-runtime "$SECRET_URL"
no_secret_in_err "a URL as grant-runtime's role"
expect_exit 2 "a URL as --runtime-role" migrate up --runtime-role "$SECRET_URL"
no_secret_in_err "a URL as --runtime-role"
psql_admin -c "DROP ROLE IF EXISTS \"$SECRET_URL\"" >/dev/null 2>&1 || true
expect_exit 2 "an unknown short option" "$MIGRATE" -x status
expect_in "$WORK/err" 'unknown option "-x"' "the unknown short option is named"

if [ "$FAILURES" -ne 0 ]; then
    echo "$FAILURES check(s) failed" >&2
    exit 1
fi
echo "all checks passed"
