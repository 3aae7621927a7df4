#!/usr/bin/env bash
# test_pg.sh - scripts/pg makes a cluster that no other local user can use: TCP connections need
# the superuser's password, which only the URL that "scripts/pg start" prints carries; a cluster
# made before that (trust) gets a password when it starts again, keeping its data; and, as root,
# the /var/tmp folder a cluster falls back to is never a symlink or another user's folder.
#
#   test_pg.sh SOURCE_DIR
#
# Starts its own clusters in a temporary folder (not scripts/test's) and stops them at the end.
# Exit 0 passed, 1 failed, 77 skipped (no PostgreSQL server installed; with CI=true or
# FERRULE_TEST_STRICT=1 that fails instead).
set -u

SRC=${1:?usage: test_pg.sh SOURCE_DIR}
PG=$SRC/scripts/pg

bindir=${FERRULE_PG_BINDIR:-}
if [ -z "$bindir" ]; then
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k5 -rn); do
        [ -x "$d/initdb" ] && { bindir=$d; break; }
    done
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    if [ "${CI:-}" = true ] || [ "${FERRULE_TEST_STRICT:-}" = 1 ]; then
        echo "FAIL: no PostgreSQL server found in /usr/lib/postgresql/*/bin: run scripts/install-deps" >&2
        exit 1
    fi
    echo "skipped: no PostgreSQL server found in /usr/lib/postgresql/*/bin (scripts/install-deps installs one)"
    exit 77
fi
PSQL=$bindir/psql

FAILURES=0
fail () { echo "FAIL: $*" >&2; FAILURES=$((FAILURES + 1)); }
pass () { echo "ok: $*"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferrule-pg-test.XXXXXX")
chmod 755 "$WORK"          # as root, the user "ferrule" must reach $WORK/pg
CLUSTERS=()
cleanup () {
    local c
    for c in ${CLUSTERS[@]+"${CLUSTERS[@]}"}; do
        "$PG" remove "$c" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# A connection as the superuser over TCP that offers no password: no PGPASSWORD, no .pgpass.
# Prints what psql printed; succeeds when the connection (and "select 1") worked.
connect_without_password () {
    env -u PGPASSWORD -u PGPASSFILE -u PGSERVICE PGPASSFILE=/nonexistent \
        "$PSQL" -X -A -t -h 127.0.0.1 -p "$1" -U postgres -d postgres -w -c 'select 1' 2>&1
}

# ---- a new cluster -------------------------------------------------------------------------
DIR=$WORK/pg
CLUSTERS+=("$DIR")
URL=$("$PG" start --test "$DIR" 2>"$WORK/start.err") || { cat "$WORK/start.err" >&2; fail "scripts/pg start"; exit 1; }
PORT=$(cat "$DIR/port")
pass "scripts/pg start printed a URL for port $PORT"

if out=$(connect_without_password "$PORT"); then
    fail "the superuser connected over TCP without a password (psql said: $out)"
else
    pass "the superuser without a password is refused over TCP ($(echo "$out" | head -n 1))"
fi
if [ "$("$PSQL" -X -A -t -d "$URL" -c 'select 1' 2>&1)" = 1 ]; then
    pass "the printed URL connects"
else
    fail "the printed URL does not connect"
fi
if [ "$("$PG" url "$DIR")" = "$URL" ]; then
    pass "scripts/pg url prints the same URL"
else
    fail "scripts/pg url prints another URL than scripts/pg start"
fi
if [ "$("$PG" psql "$DIR" -XtAc 'select 2' 2>&1)" = 2 ]; then
    pass "scripts/pg psql connects"
else
    fail "scripts/pg psql does not connect"
fi
case "$URL" in
    postgresql://postgres:?*@127.0.0.1:"$PORT"/postgres) pass "the URL carries a password" ;;
    *) fail "the URL has not the form postgresql://postgres:PASSWORD@127.0.0.1:$PORT/postgres" ;;
esac
if grep -q "${URL#postgresql://postgres:}" "$WORK/start.err" 2>/dev/null; then
    fail "scripts/pg start wrote the password on stderr"
fi

pwfile=$DIR/superuser.password
owner=$(id -un)
[ "$(id -u)" -eq 0 ] && owner=ferrule
if [ "$(stat -c '%a %U' "$pwfile" 2>/dev/null)" = "600 $owner" ]; then
    pass "the password file is 0600 and belongs to $owner"
else
    fail "the password file is \"$(stat -c '%a %U' "$pwfile" 2>&1)\", not \"600 $owner\""
fi
if grep -Eq '^[[:space:]]*(local|host)[[:space:]].*[[:space:]]trust[[:space:]]*$' "$DIR/data/pg_hba.conf"; then
    fail "pg_hba.conf still trusts someone: $(grep -E 'trust[[:space:]]*$' "$DIR/data/pg_hba.conf" | grep -v '^#' | head -n 1)"
else
    pass "pg_hba.conf trusts no one"
fi

"$PG" stop "$DIR" 2>/dev/null || fail "scripts/pg stop"
URL2=$("$PG" start --test "$DIR" 2>/dev/null)
if [ "$URL2" = "$URL" ]; then
    pass "a second start keeps the password"
else
    fail "a second start printed another URL"
fi

# ---- a cluster made before passwords (trust everywhere) -------------------------------------
"$PSQL" -X -q -d "$URL" -c 'CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)' >/dev/null \
    || fail "could not create a table"
"$PG" stop "$DIR" 2>/dev/null
rm -f "$pwfile"
printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' >"$DIR/data/pg_hba.conf"
if URL3=$("$PG" start --test "$DIR" 2>"$WORK/upgrade.err"); then
    pass "a cluster made with trust starts"
else
    cat "$WORK/upgrade.err" >&2
    fail "a cluster made with trust does not start"
fi
if out=$(connect_without_password "$(cat "$DIR/port")"); then
    fail "after the upgrade the superuser still connects without a password (psql said: $out)"
else
    pass "after the upgrade the superuser needs a password"
fi
if [ "$("$PSQL" -X -A -t -d "$URL3" -c 'select v from kept' 2>&1)" = 42 ]; then
    pass "the upgraded cluster kept its data and its new URL connects"
else
    fail "the upgraded cluster lost its data or its URL does not connect"
fi
[ "$URL3" != "$URL" ] || fail "the upgraded cluster has the old URL (the password was not renewed)"
"$PG" stop "$DIR" 2>/dev/null

# ---- as root: the /var/tmp fallback ---------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
    echo "note: not root, so the /var/tmp fallback (root only) is not tested"
else
    PRIVATE=$WORK/private              # 0700: the user "ferrule" cannot reach a cluster in it
    mkdir -m 700 "$PRIVATE"
    FDIR=$PRIVATE/pg
    CLUSTERS+=("$FDIR")
    FALLBACK=/var/tmp/ferrule-$(printf '%s' "$FDIR" | sha256sum | cut -c1-16)
    if [ -e "$FALLBACK" ] || [ -L "$FALLBACK" ]; then
        fail "$FALLBACK exists before the test"
    fi
    if "$PG" start --test "$FDIR" >/dev/null 2>"$WORK/fallback.err" && [ -L "$FDIR" ]; then
        pass "a cluster the user \"ferrule\" cannot reach lives in $FALLBACK"
    else
        cat "$WORK/fallback.err" >&2
        fail "no fallback cluster in $FALLBACK"
    fi
    if [ "$(stat -c '%a %U' "$FALLBACK" 2>&1)" = "700 ferrule" ] && [ ! -L "$FALLBACK" ]; then
        pass "$FALLBACK is a folder, 0700, of the user \"ferrule\""
    else
        fail "$FALLBACK is \"$(stat -c '%F %a %U' "$FALLBACK" 2>&1)\""
    fi
    "$PG" stop "$FDIR" 2>/dev/null
    if "$PG" start --test "$FDIR" >/dev/null 2>&1; then
        pass "the fallback folder is used again at the next start"
    else
        fail "the fallback folder is not used again"
    fi
    "$PG" stop "$FDIR" 2>/dev/null

    # The system's cleanup of /var/tmp removed the folder, and another user put a symlink there
    # (to a folder of root's, here) before the next start.
    rm -rf "$FALLBACK"
    VICTIM=$WORK/victim
    mkdir -m 755 "$VICTIM"
    ln -s "$VICTIM" "$FALLBACK"
    if "$PG" start --test "$FDIR" >/dev/null 2>"$WORK/planted.err"; then
        fail "scripts/pg started through a symlink planted at $FALLBACK"
        "$PG" stop "$FDIR" 2>/dev/null
    else
        pass "a symlink planted at $FALLBACK is refused: $(tail -n 1 "$WORK/planted.err")"
    fi
    if [ "$(stat -c '%a %U' "$VICTIM")" = "755 root" ] && [ -z "$(ls -A "$VICTIM")" ]; then
        pass "the symlink's target was not changed"
    else
        fail "the symlink's target was changed: $(stat -c '%a %U' "$VICTIM"), $(ls -A "$VICTIM" | head -n 3 | tr '\n' ' ')"
    fi
    rm -f "$FALLBACK"

    # Another user's folder there, with a cluster of theirs in it.
    other=nobody
    if id -u "$other" >/dev/null 2>&1; then
        mkdir -m 755 "$FALLBACK"
        mkdir "$FALLBACK/data"
        chown -R "$other" "$FALLBACK"
        if "$PG" start --test "$FDIR" >/dev/null 2>"$WORK/other.err"; then
            fail "scripts/pg started in a folder of the user \"$other\""
            "$PG" stop "$FDIR" 2>/dev/null
        else
            pass "a folder of another user at $FALLBACK is refused: $(tail -n 1 "$WORK/other.err")"
        fi
        if [ "$(stat -c '%U' "$FALLBACK")" = "$other" ]; then
            pass "that folder still belongs to \"$other\""
        else
            fail "that folder now belongs to \"$(stat -c '%U' "$FALLBACK")\""
        fi
        rm -rf "$FALLBACK"
    fi

    # With the planted things gone, the cluster is made again.
    if "$PG" start --test "$FDIR" >/dev/null 2>"$WORK/again.err" && [ "$(stat -c '%a %U' "$FALLBACK")" = "700 ferrule" ]; then
        pass "with $FALLBACK gone, the next start makes it again"
    else
        cat "$WORK/again.err" >&2
        fail "the fallback folder was not made again"
    fi
fi

if [ "$FAILURES" -gt 0 ]; then
    echo "$FAILURES check(s) failed"
    exit 1
fi
echo "all checks passed"
