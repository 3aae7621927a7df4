#!/usr/bin/env bash
# Starts the whole service from the container image the way deploy/k8s runs it, and checks it:
#
#   - the build context of scripts/image holds only the sources (no .ferrule*, build trees, .git)
#   - the image: runs as 10001:10001 by default, holds the four programs and no compiler, no
#     headers, no package caches, no build tree; at most 150 MiB with its base
#   - every container: uid/gid 10001, a read-only root file system (no tmpfs either), every
#     capability dropped, no new privileges, host networking, every shell of the image masked
#     (so the service is shown to need none); no setuid or setgid file in the image
#   - secrets come from files mounted read-only (secrets/ at /etc/ferrule/secrets: the providers
#     file with the client secret, the refresh token to import; keys/ at /etc/ferrule/keys) and
#     from an env file (the database URL and the encryption key, as a Kubernetes secretRef does)
#   - "ferrule-migrate wait" says not ready before "ferrule-migrate up", ready after it
#   - two brokers and two workers (connected to both) become ready on /readyz; each worker's
#     journal is on the mounted volume; with the image's ferrulectl a token is imported and
#     fetched through one broker, fetched from the cache and refreshed through the other, against
#     the fake provider on the host, which sees the refreshes
#   - ferrule-gateway: --print-routes lists its routes; a gateway container (CURVE client of the
#     brokers, its session key from a mounted file) answers /healthz and /readyz (200 once a
#     broker answers its ping), serves its stylesheet and a dashboard link's confirm page, refuses
#     an API call without a key (401)
#   - the reload deploy/README.md documents ("kubectl exec POD -- sh -c 'kill -HUP 1'"), run as
#     written in a gateway container (the shells not masked: kubectl exec uses the image's): a
#     named API client the policy allows gets its token, the policy is narrowed, the command
#     makes the gateway read it again, and the client is refused (403)
#   - SIGTERM: the gateways, each worker, then each broker drains and exits 0
#
# Environment: FERRULE_TEST_PG_ADMIN_URL (scripts/test's PostgreSQL), FERRULE_FAKE_PROVIDER (the
# fake provider program; ctest sets it), FERRULE_TEST_IMAGE (the image to test, default
# localhost/ferrule:VERSION); scripts/test builds the image in the background while the tests
# run and sets FERRULE_TEST_IMAGE_RC (a file that gets scripts/image's exit status when it ends)
# and FERRULE_TEST_IMAGE_IDFILE (the id of the image it built): the test waits for the first,
# then tests the image the second names, or fails with the build's status.
#
# When the image cannot be built or run here the test FAILS. Only FERRULE_SKIP_IMAGE_TEST=1 skips
# it (exit 77), for a developer's machine without podman; CI never sets it.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

say () { echo "test_image: $*"; }
fail () { echo "test_image: FAILED: $*" >&2; exit 1; }

if [ "${FERRULE_SKIP_IMAGE_TEST:-0}" = 1 ]; then
    say "skipped: FERRULE_SKIP_IMAGE_TEST=1 (the container image is not built or run on this machine)"
    exit 77
fi
if [ -n "${FERRULE_TEST_IMAGE_RC:-}" ]; then
    # scripts/test's background build: at most 10 minutes (the test's own limit is 15)
    waited=0
    while [ ! -s "$FERRULE_TEST_IMAGE_RC" ] && [ "$waited" -lt 600 ]; do
        sleep 2
        waited=$((waited + 2))
    done
    [ -s "$FERRULE_TEST_IMAGE_RC" ] \
        || fail "the container image's build in the background did not end within 600 s (see .ferrule-test/image.log)"
    image_rc=$(cat "$FERRULE_TEST_IMAGE_RC")
    [ "$waited" -eq 0 ] || say "waited ${waited} s for the container image's build in the background"
    if [ "$image_rc" != 0 ] || [ ! -s "${FERRULE_TEST_IMAGE_IDFILE:-}" ]; then
        # the build's log, which only this test's output carries into CI's
        tail -n 40 "$(dirname "$FERRULE_TEST_IMAGE_RC")/image.log" 2>/dev/null || true
        fail "scripts/image failed with status $image_rc, so the image cannot be tested (see .ferrule-test/image.log; FERRULE_SKIP_IMAGE_TEST=1 skips this test on a machine without podman)"
    fi
    FERRULE_TEST_IMAGE=$(cat "$FERRULE_TEST_IMAGE_IDFILE")
fi
[ "$(id -u)" -eq 0 ] || fail "the image test runs rootful podman: run it as root (scripts/test does in CI), or set FERRULE_SKIP_IMAGE_TEST=1 to skip it"
command -v podman >/dev/null 2>&1 || fail "podman is not installed: run scripts/image (it installs podman and builds the image), or set FERRULE_SKIP_IMAGE_TEST=1 to skip this test"
[ -n "${FERRULE_TEST_PG_ADMIN_URL:-}" ] || fail "FERRULE_TEST_PG_ADMIN_URL is not set: run this through scripts/test, which starts PostgreSQL"
FAKE_BIN=${FERRULE_FAKE_PROVIDER:-$ROOT/build/tests/fake_provider/ferrule-fake-provider}
[ -x "$FAKE_BIN" ] || fail "$FAKE_BIN is not built (scripts/build)"
for tool in psql curl jq; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed (scripts/install-deps)"
done

export CONTAINERS_CONF=$ROOT/deploy/docker/containers.conf
VERSION=$(scripts/image --version)
IMAGE=${FERRULE_TEST_IMAGE:-localhost/ferrule:$VERSION}
podman image exists "$IMAGE" || fail "image \"$IMAGE\" does not exist: build it with scripts/image (scripts/test does), or set FERRULE_SKIP_IMAGE_TEST=1 to skip this test"

TAG=fimg$$
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferrule-image-test.XXXXXX")
chmod 755 "$WORK"
DB=ferrule_$TAG
ROLE=ferrule_$TAG
containers=()
fake_pid=""
mounted=0

cleanup () {
    local rc=$? c
    trap - EXIT INT TERM
    if [ "$rc" -ne 0 ]; then
        for c in "${containers[@]}"; do
            echo "---- last lines of container $c (status $(podman inspect --format '{{.State.ExitCode}}' "$c" 2>/dev/null || echo '?'))" >&2
            podman logs --tail 25 "$c" >&2 2>&1 || true
        done
        [ ! -f "$WORK/fake.log" ] || { echo "---- last lines of the fake provider" >&2; tail -n 15 "$WORK/fake.log" >&2; }
    fi
    for c in "${containers[@]}"; do
        podman rm -f -t 2 "$c" >/dev/null 2>&1 || true
    done
    [ "$mounted" -eq 0 ] || podman image unmount "$IMAGE" >/dev/null 2>&1 || true
    if [ -n "$fake_pid" ]; then
        kill -TERM "$fake_pid" 2>/dev/null || true
        wait "$fake_pid" 2>/dev/null || true
    fi
    psql "$FERRULE_TEST_PG_ADMIN_URL" -XqAt -v ON_ERROR_STOP=0 \
        -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1 || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the image itself ----
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[ "$user" = "10001:10001" ] || fail "the image's user is \"$user\", not 10001:10001 (USER in deploy/docker/Dockerfile)"
label=$(podman image inspect --format '{{index .Config.Labels "org.opencontainers.image.version"}}' "$IMAGE")
[ "$label" = "$VERSION" ] || fail "the image's org.opencontainers.image.version is \"$label\", not $VERSION: rebuild it with scripts/image"
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "image $IMAGE: $(( size / 1048576 )) MiB"
[ "$size" -le $(( 150 * 1048576 )) ] || fail "the image takes $(( size / 1048576 )) MiB, above the 150 MiB aimed at in docs/operations.md: look for what its runtime stage installs"

rootfs=$(podman image mount "$IMAGE")
mounted=1
for bin in ferrule-broker ferrule-worker ferrule-gateway ferrule-migrate ferrulectl; do
    [ -x "$rootfs/usr/local/bin/$bin" ] || fail "the image has no /usr/local/bin/$bin"
done
unwanted=$(cd "$rootfs" && {
    for f in usr/bin/gcc usr/bin/cc usr/bin/c99 usr/bin/cmake usr/bin/make usr/bin/ld usr/bin/as \
             usr/bin/pkg-config src; do
        [ ! -e "$f" ] || echo "/$f"
    done
    { find usr/include var/lib/apt/lists var/cache/apt -type f -not -name lock 2>/dev/null || true; } | awk "NR <= 20 { print \"/\" \$0 }"
})
[ -z "$unwanted" ] || fail "the runtime image holds build tools or package caches it does not need: $(tr '\n' ' ' <<<"$unwanted")"
setid=$(cd "$rootfs" && find . -xdev -type f -perm /6000 2>/dev/null | awk 'NR <= 10 { print substr($0, 2) }')
[ -z "$setid" ] || fail "the image holds setuid or setgid files: $(tr '\n' ' ' <<<"$setid")"
# Every shell of the image is masked (/dev/null mounted over it) in the containers below, so
# the service is shown to need none: only the shell files themselves, not the links to them.
SHELL_MASKS=()
while read -r sh; do
    case "$sh" in
        /usr/*) if [ -f "$rootfs$sh" ] && [ ! -L "$rootfs$sh" ]; then SHELL_MASKS+=(-v "/dev/null:$sh:ro"); fi ;;
    esac
done < <(grep -v '^#' "$rootfs/etc/shells" 2>/dev/null || true)
podman image unmount "$IMAGE" >/dev/null
mounted=0
say "the image holds the five programs and no compiler, headers, package caches or setuid files"

# The command deploy/README.md has an operator run in a pod to make it read its Secrets again
# (kubectl exec POD -- COMMAND), run in a gateway below: the image has no kill program, so it
# must be one that works with what the image has
reload=$({ grep -ohE 'exec "\$pod" -- .*' deploy/README.md || true; } | sed 's/^exec "\$pod" -- //' | sort -u)
[ -n "$reload" ] || fail "deploy/README.md documents no command to make a pod read its Secrets again (kubectl -n ferrule exec \"\$pod\" -- COMMAND)"
[ "$(wc -l <<<"$reload")" -eq 1 ] || fail "deploy/README.md documents different reload commands: $(tr '\n' ';' <<<"$reload")"

# The build context scripts/image gives podman: only the sources the Dockerfile copies, never the
# local state beside them (.ferrule-test/ holds this run's PostgreSQL, .ferrule/ a key).
scripts/image --context >"$WORK/context.txt" 2>"$WORK/context.err" \
    || { cat "$WORK/context.err" >&2; fail "scripts/image --context failed"; }
grep -qx 'common/health.c' "$WORK/context.txt" || fail "the build context lacks common/health.c: is deploy/docker/Dockerfile.dockerignore too strict?"
stray=$(grep -vE '^(CMakeLists\.txt|common|broker|worker|gateway|migrations|ctl|tests)(/|$)' "$WORK/context.txt" | head -n 10 || true)
[ -z "$stray" ] || fail "the build context holds more than the sources (is the ignore file passed to podman?): $(tr '\n' ' ' <<<"$stray")"
! grep -qE '(^|/)(build[^/]*|\.ferrule[^/]*|\.git|CMakeCache\.txt|CMakeFiles)(/|$)|\.o$' "$WORK/context.txt" \
    || fail "the build context holds build output or local state: $(grep -E '(^|/)(build[^/]*|\.ferrule[^/]*|\.git|CMakeCache\.txt|CMakeFiles)(/|$)|\.o$' "$WORK/context.txt" | head -n 5 | tr '\n' ' ')"
say "the build context holds $(wc -l <"$WORK/context.txt") entries, all sources"

# ---- ports, the database, the secrets ----
used_ports=" "
port_busy () { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Sets PORT to a port of 127.0.0.1 that nothing listens on and this test has not taken yet.
pick_port () {
    local p
    for _ in $(seq 1 200); do
        p=$(( 20000 + RANDOM % 10000 ))
        if [[ "$used_ports" != *" $p "* ]] && ! port_busy "$p"; then
            used_ports="$used_ports$p "
            PORT=$p
            return
        fi
    done
    fail "found no free port on 127.0.0.1"
}
# two brokers, as the Deployment runs them: frontend, backend and HTTP port of each
for b in 1 2; do
    pick_port; declare "FRONT_$b=tcp://127.0.0.1:$PORT"
    pick_port; declare "BACK_$b=tcp://127.0.0.1:$PORT"
    pick_port; declare "HTTP_B$b=$PORT"
done
pick_port; HTTP_W1=$PORT
pick_port; HTTP_W2=$PORT
pick_port; HTTP_G=$PORT
pick_port; GW_PORT=$PORT

# scripts/pg's cluster takes no login over TCP without a password (the statement on stdin, not on
# a command line that ps shows)
ROLE_PASSWORD=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
printf "CREATE ROLE %s LOGIN PASSWORD '%s';\nCREATE DATABASE %s OWNER %s;\n" "$ROLE" "$ROLE_PASSWORD" "$DB" "$ROLE" \
    | psql "$FERRULE_TEST_PG_ADMIN_URL" -XqAt -v ON_ERROR_STOP=1 >/dev/null \
    || fail "could not create database \"$DB\" in scripts/test's PostgreSQL"
admin=${FERRULE_TEST_PG_ADMIN_URL#postgresql://}
hostport=${admin#*@}
hostport=${hostport%%/*}
DB_URL="postgresql://$ROLE:$ROLE_PASSWORD@$hostport/$DB"

"$FAKE_BIN" --port 0 --port-file "$WORK/fake.port" >"$WORK/fake.log" 2>&1 &
fake_pid=$!
for _ in $(seq 1 100); do
    [ -s "$WORK/fake.port" ] && break
    sleep 0.1
done
[ -s "$WORK/fake.port" ] || fail "the fake provider wrote no port"
FAKE=http://127.0.0.1:$(tr -dc '0-9' <"$WORK/fake.port")
fake_admin () { curl -fsS --noproxy '*' -X "$1" -H 'Content-Type: application/json' ${3:+--data "$3"} "$FAKE$2"; }
fake_admin PUT /admin/providers/demo '{"mode":"single_use","access_ttl":3600}' >/dev/null \
    || fail "could not configure the fake provider"

# The mounted files: secrets/ and keys/ (read-only, owned by the containers' user, like a
# Kubernetes Secret volume with fsGroup). Put further secret or key files here.
SECRETS=$WORK/secrets
KEYS=$WORK/keys
JOURNAL=$WORK/journal
mkdir -p "$SECRETS" "$KEYS" "$JOURNAL"
(umask 077
 cat >"$SECRETS/providers.json" <<JSON
{
  "demo": {
    "authorization_url": "$FAKE/demo/authorize",
    "token_url": "$FAKE/demo/token",
    "revocation_url": "$FAKE/demo/revoke",
    "auth_method": "client_secret_basic",
    "scope_separator": " ",
    "default_scopes": [],
    "pkce": false,
    "refresh_token_rotation": "single_use",
    "reuse_grace_seconds": 0,
    "client_id": "ferrule-test-client",
    "client_secret": "ferrule-test-secret"
  }
}
JSON
 fake_admin POST /admin/grants '{"provider":"demo"}' | jq -j '.refresh_token // empty' >"$SECRETS/refresh-token"
 # the gateway's session key, a mounted file as in deploy/k8s (FERRULE_GATEWAY_SESSION_KEY_FILE)
 head -c32 /dev/urandom | base64 | tr -d '\n' >"$SECRETS/session-key"
 # what a secretRef puts in the environment: the database URL and the encryption key
 printf 'FERRULE_DATABASE_URL=%s\nFERRULE_ENCRYPTION_KEY=%s\n' "$DB_URL" "$(head -c32 /dev/urandom | base64)" >"$WORK/secret.env"
)
[ -s "$SECRETS/refresh-token" ] || fail "the fake provider made no grant"
chown -R 10001:10001 "$SECRETS" "$KEYS" "$JOURNAL"
# CURVE keys, made by the image's own ferrulectl, and the brokers' lists, as the Secrets of
# deploy/README.md hold them: a pair for the brokers, one per worker, one for the client "ops",
# one for the gateway (a client of the brokers)
for name in broker worker-1 worker-2 ops gateway; do
    podman run --rm --network none --user 10001:10001 --read-only --read-only-tmpfs=false --cap-drop ALL \
        --security-opt no-new-privileges --pull never -v "$KEYS:/keys" "$IMAGE" ferrulectl keygen --out "/keys/$name" \
        >/dev/null || fail "ferrulectl keygen of the image could not make the key pair \"$name\""
done
printf 'ops %s\ngateway %s\n' "$(cat "$KEYS/ops.pub")" "$(cat "$KEYS/gateway.pub")" >"$KEYS/clients"
printf 'worker-1 %s\nworker-2 %s\n' "$(cat "$KEYS/worker-1.pub")" "$(cat "$KEYS/worker-2.pub")" >"$KEYS/workers"
printf 'ops * *\ngateway * *\n' >"$KEYS/policy"
chown 10001:10001 "$KEYS/clients" "$KEYS/workers" "$KEYS/policy"
chmod 0500 "$SECRETS" "$KEYS"
chmod 0700 "$JOURNAL"

# Every container as deploy/k8s runs it: runAsUser/runAsGroup 10001, readOnlyRootFilesystem
# (without podman's default tmpfs on /tmp, /run, which Kubernetes does not give),
# capabilities drop ALL, allowPrivilegeEscalation false, the runtime's default seccomp profile.
RUN_SHELL=(podman run --network host --user 10001:10001 --read-only --read-only-tmpfs=false
           --cap-drop ALL --security-opt no-new-privileges --pull never
           --env-file "$WORK/secret.env"
           -v "$SECRETS:/etc/ferrule/secrets:ro" -v "$KEYS:/etc/ferrule/keys:ro")
RUN=("${RUN_SHELL[@]}" ${SHELL_MASKS[@]+"${SHELL_MASKS[@]}"})

# runs a program of the image in a new container to completion; prints its output
run_once () { "${RUN[@]}" --rm "$IMAGE" "$@"; }

# The masks work: no shell can start in these containers.
rc=0
run_once sh -c true >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a shell still runs in the containers (\"sh -c true\" exited 0): the shell masks do not work"

# The gateway's routes, from the image's binary (docs/openapi.yaml lists the same).
routes=$(run_once ferrule-gateway --print-routes 2>"$WORK/routes.err") \
    || { cat "$WORK/routes.err" >&2; fail "ferrule-gateway --print-routes of the image failed"; }
for route in 'GET /oauth/callback' 'GET /dashboard/open' 'POST /dashboard/open' 'GET /v1/integrations/{id}/token'; do
    grep -qxF "$route" <<<"$routes" || fail "ferrule-gateway --print-routes of the image lacks \"$route\": $(tr '\n' ';' <<<"$routes")"
done
say "ferrule-gateway --print-routes of the image lists $(wc -l <<<"$routes") routes"

# ---- migrations ----
rc=0
run_once ferrule-migrate wait --timeout 1 >"$WORK/wait-before.out" 2>&1 || rc=$?
[ "$rc" -eq 5 ] || { cat "$WORK/wait-before.out" >&2; fail "ferrule-migrate wait before any migration exited $rc, expected 5 (not ready)"; }
rc=0
run_once ferrule-migrate up >"$WORK/up.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || { cat "$WORK/up.out" >&2; fail "ferrule-migrate up exited $rc"; }
rc=0
run_once ferrule-migrate wait --timeout 30 >"$WORK/wait-after.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || { cat "$WORK/wait-after.out" >&2; fail "ferrule-migrate wait after up exited $rc, expected 0"; }
say "ferrule-migrate: wait said not ready (5), up applied the schema, wait said ready"

# ---- the service ----
start () {
    local name=$1
    shift
    containers+=("$name")           # (before: a container that fails to start is removed too)
    "${RUN[@]}" -d --name "$name" "$@" >/dev/null || fail "could not start container $name"
}
# as start, with the image's shells (for a command an operator runs with kubectl exec)
start_with_shell () {
    local name=$1
    shift
    containers+=("$name")
    "${RUN_SHELL[@]}" -d --name "$name" "$@" >/dev/null || fail "could not start container $name"
}
for b in 1 2; do
    front=FRONT_$b back=BACK_$b http=HTTP_B$b
    start "$TAG-broker-$b" -e FERRULE_FRONTEND_BIND="${!front}" -e FERRULE_BACKEND_BIND="${!back}" \
        -e FERRULE_CURVE_SECRET_KEY_FILE=/etc/ferrule/keys/broker.key \
        -e FERRULE_CLIENTS_FILE=/etc/ferrule/keys/clients -e FERRULE_WORKERS_FILE=/etc/ferrule/keys/workers \
        -e FERRULE_POLICY_FILE=/etc/ferrule/keys/policy \
        -e FERRULE_HTTP_BIND="127.0.0.1:${!http}" "$IMAGE" ferrule-broker
done
for n in 1 2; do
    port_var=HTTP_W$n
    start "$TAG-worker-$n" -v "$JOURNAL:/var/lib/ferrule/journal" \
        -e FERRULE_WORKER_ID="worker-$n" -e FERRULE_BROKER_BACKENDS="$BACK_1,$BACK_2" \
        -e FERRULE_PROVIDERS_FILE=/etc/ferrule/secrets/providers.json \
        -e FERRULE_JOURNAL_PATH="/var/lib/ferrule/journal/worker-$n.journal" \
        -e FERRULE_CURVE_SECRET_KEY_FILE="/etc/ferrule/keys/worker-$n.key" \
        -e FERRULE_BROKER_PUBLIC_KEY_FILE=/etc/ferrule/keys/broker.pub \
        -e FERRULE_HTTP_BIND="127.0.0.1:${!port_var}" "$IMAGE" ferrule-worker
done

# the gateway, as deploy/k8s/base/gateway-deployment.yaml runs it (loopback here: host network)
start "$TAG-gateway" -e FERRULE_GATEWAY_BIND="127.0.0.1:$GW_PORT" \
    -e FERRULE_GATEWAY_PUBLIC_URL="http://127.0.0.1:$GW_PORT" -e FERRULE_BROKER_URL="$FRONT_1,$FRONT_2" \
    -e FERRULE_CURVE_SECRET_KEY_FILE=/etc/ferrule/keys/gateway.key \
    -e FERRULE_BROKER_PUBLIC_KEY_FILE=/etc/ferrule/keys/broker.pub \
    -e FERRULE_GATEWAY_SESSION_KEY_FILE=/etc/ferrule/secrets/session-key \
    -e FERRULE_HTTP_BIND="127.0.0.1:$HTTP_G" "$IMAGE" ferrule-gateway

# What the kubelet would see of each container's process, read from the host.
for c in "${containers[@]}"; do
    pid=$(podman inspect --format '{{.State.Pid}}' "$c")
    [ -n "$pid" ] && [ "$pid" -gt 0 ] || fail "container $c is not running"
    status=$(cat "/proc/$pid/status")
    grep -qE '^Uid:\s+10001\s+10001\s+10001\s+10001$' <<<"$status" || fail "container $c does not run as uid 10001: $(grep ^Uid: <<<"$status")"
    grep -qE '^Gid:\s+10001\s+10001\s+10001\s+10001$' <<<"$status" || fail "container $c does not run as gid 10001: $(grep ^Gid: <<<"$status")"
    for cap in CapInh CapPrm CapEff CapBnd CapAmb; do
        grep -qE "^$cap:\s+0+$" <<<"$status" || fail "container $c keeps capabilities: $(grep "^$cap:" <<<"$status")"
    done
    grep -qE '^NoNewPrivs:\s+1$' <<<"$status" || fail "container $c may gain privileges (NoNewPrivs is not 1)"
    grep -qE '^Seccomp:\s+2$' <<<"$status" || fail "container $c runs without a seccomp filter"
    # the root mount of the container's mount namespace is read-only
    awk '$5 == "/" { print $6 }' "/proc/$pid/mountinfo" | grep -qE '(^|,)ro(,|$)' \
        || fail "container $c has a writable root file system"
done
say "brokers, workers and the gateway run as 10001:10001 with no capabilities, no new privileges, seccomp and a read-only root"

ready () { [ "$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/readyz")" = 200 ]; }
for _ in $(seq 1 300); do
    ready "$HTTP_B1" && ready "$HTTP_B2" && ready "$HTTP_W1" && ready "$HTTP_W2" && ready "$HTTP_G" && break
    for c in "${containers[@]}"; do
        [ "$(podman inspect --format '{{.State.Running}}' "$c")" = true ] || fail "container $c exited"
    done
    sleep 0.2
done
for p in "$HTTP_B1" "$HTTP_B2" "$HTTP_W1" "$HTTP_W2" "$HTTP_G"; do
    ready "$p" || fail "127.0.0.1:$p/readyz does not answer 200 after 60 s: $(curl -s --noproxy '*' --max-time 2 "http://127.0.0.1:$p/readyz" || echo 'no answer')"
done
say "both brokers, both workers and the gateway answer 200 on /readyz"
# status of GET (or another method) of the gateway; the body goes to $WORK/gw.out
gw_status () { curl -s --noproxy '*' -o "$WORK/gw.out" -w '%{http_code}' --max-time 10 -X "$1" "http://127.0.0.1:$2"; }
code=$(gw_status GET "$HTTP_G/healthz")
[ "$code" = 200 ] || fail "the gateway's /healthz answered $code, expected 200"
code=$(gw_status GET "$GW_PORT/static/ferrule.css")
[ "$code" = 200 ] || fail "the gateway's stylesheet answered $code, expected 200"
code=$(gw_status GET "$GW_PORT/dashboard/open?link=not-a-link&workspace=acct1:")
[ "$code" = 200 ] && grep -q 'Open the dashboard of acct1:' "$WORK/gw.out" \
    || fail "the gateway's dashboard link page answered $code without its confirm page"
code=$(gw_status GET "$GW_PORT/v1/integrations/demo:acct1/token")
[ "$code" = 401 ] && jq -e '.error.code == "unauthenticated"' "$WORK/gw.out" >/dev/null \
    || fail "the gateway's API without a key answered $code, expected 401 unauthenticated"
say "the gateway answers /healthz, its stylesheet, a dashboard link's confirm page and 401 to an API call without a key"
for n in 1 2; do
    [ -f "$JOURNAL/worker-$n.journal" ] || fail "worker-$n has no journal on the mounted volume ($JOURNAL/worker-$n.journal)"
done

# ---- a token through the broker, with the image's ferrulectl ----
# ctl N ARGS: ferrulectl of the image through broker N
ctl () {
    local front=FRONT_$1
    shift
    "${RUN[@]}" --rm -e FERRULE_CURVE_SECRET_KEY_FILE=/etc/ferrule/keys/ops.key \
        -e FERRULE_BROKER_PUBLIC_KEY_FILE=/etc/ferrule/keys/broker.pub \
        "$IMAGE" ferrulectl --json --broker "${!front}" "$@"
}
# "refreshed" of one reply, which is not printed: it holds a token
refreshed () {
    local out rc=0
    out=$(ctl "$@" 2>"$WORK/ctl.err") || rc=$?
    [ "$rc" -eq 0 ] || { cat "$WORK/ctl.err" >&2; fail "ferrulectl $2 through broker $1 exited $rc"; }
    jq -r 'if (.access_token // "") == "" then "no access token" else .refreshed end' <<<"$out" 2>/dev/null \
        || echo "not JSON"
}
rc=0
ctl 1 import --integration demo:acct1 --provider demo \
    --refresh-token-file /etc/ferrule/secrets/refresh-token >/dev/null 2>"$WORK/ctl.err" || rc=$?
[ "$rc" -eq 0 ] || { cat "$WORK/ctl.err" >&2; fail "ferrulectl import exited $rc"; }
got=$(refreshed 1 token --integration demo:acct1)
[ "$got" = true ] || fail "the first token should be refreshed at the provider; \"refreshed\": $got"
got=$(refreshed 2 token --integration demo:acct1)
[ "$got" = false ] || fail "the second token (through the other broker) should come from the cache; \"refreshed\": $got"
got=$(refreshed 2 refresh --integration demo:acct1)
[ "$got" = true ] || fail "refresh should refresh at the provider; \"refreshed\": $got"
ok=$(fake_admin GET /admin/stats | jq -r '.providers.demo.refresh_ok // 0')
[ "$ok" -eq 2 ] || fail "the fake provider saw $ok successful refreshes, expected 2"
say "a token was imported and fetched through broker 1, served from the cache and refreshed through broker 2; the provider saw 2 refreshes"

# ---- the documented reload of the policy, in a gateway ----
eval "set -- $reload"
API_KEY=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
(umask 077
 printf 'billing %s\n' "$(printf %s "$API_KEY" | sha256sum | cut -d' ' -f1)" >"$SECRETS/client-keys"
 printf 'billing read *\n' >"$SECRETS/policy")
chown 10001:10001 "$SECRETS/client-keys" "$SECRETS/policy"
pick_port; HTTP_G2=$PORT
pick_port; GW2_PORT=$PORT
start_with_shell "$TAG-gateway-reload" -e FERRULE_GATEWAY_BIND="127.0.0.1:$GW2_PORT" \
    -e FERRULE_GATEWAY_PUBLIC_URL="http://127.0.0.1:$GW2_PORT" -e FERRULE_BROKER_URL="$FRONT_1,$FRONT_2" \
    -e FERRULE_CURVE_SECRET_KEY_FILE=/etc/ferrule/keys/gateway.key \
    -e FERRULE_BROKER_PUBLIC_KEY_FILE=/etc/ferrule/keys/broker.pub \
    -e FERRULE_GATEWAY_SESSION_KEY_FILE=/etc/ferrule/secrets/session-key \
    -e FERRULE_GATEWAY_CLIENT_KEYS_FILE=/etc/ferrule/secrets/client-keys \
    -e FERRULE_POLICY_FILE=/etc/ferrule/secrets/policy \
    -e FERRULE_HTTP_BIND="127.0.0.1:$HTTP_G2" "$IMAGE" ferrule-gateway
for _ in $(seq 1 300); do
    ready "$HTTP_G2" && break
    [ "$(podman inspect --format '{{.State.Running}}' "$TAG-gateway-reload")" = true ] || fail "container $TAG-gateway-reload exited"
    sleep 0.2
done
ready "$HTTP_G2" || fail "the second gateway's /readyz does not answer 200 after 60 s"
# the status of the named client's token call (the body, which holds the token, is not printed)
billing_token () {
    curl -s --noproxy '*' -o "$WORK/gw.out" -w '%{http_code}' --max-time 10 \
        -H "Authorization: Bearer $API_KEY" "http://127.0.0.1:$GW2_PORT/v1/integrations/demo:acct1/token"
}
code=$(billing_token)
[ "$code" = 200 ] || fail "the named client \"billing\" (policy \"billing read *\") got $code for its token through the gateway, expected 200"
printf 'billing status *\n' >"$SECRETS/policy"
rc=0
podman exec "$TAG-gateway-reload" "$@" >"$WORK/reload.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || { cat "$WORK/reload.out" >&2; fail "deploy/README.md's reload command ($reload) exited $rc in the image's gateway container"; }
for _ in $(seq 1 100); do
    podman logs "$TAG-gateway-reload" 2>&1 | grep -q 'SIGHUP: 1 client keys and the policy just read are in effect' && break
    sleep 0.1
done
podman logs "$TAG-gateway-reload" 2>&1 | grep -q 'SIGHUP: 1 client keys and the policy just read are in effect' \
    || fail "the gateway did not log that it read the policy again after deploy/README.md's reload command ($reload)"
code=$(billing_token)
[ "$code" = 403 ] && jq -e '.error.code == "forbidden"' "$WORK/gw.out" >/dev/null \
    || fail "after the policy was narrowed to \"billing status *\" and the gateway reloaded, the token call answered $code, expected 403 forbidden"
say "deploy/README.md's reload command ($reload) works in the image: the gateway read the narrowed policy, and a client it no longer allows tokens got 403"

# ---- SIGTERM: the gateways, the workers, then the brokers, as a rollout would ----
for c in "$TAG-gateway" "$TAG-gateway-reload" "$TAG-worker-1" "$TAG-worker-2" "$TAG-broker-1" "$TAG-broker-2"; do
    podman kill --signal TERM "$c" >/dev/null
    code=$(timeout 60 podman wait "$c" || echo "none")
    [ "$code" = 0 ] || fail "container $c exited with status $code after SIGTERM, expected 0"
done
say "SIGTERM: the gateways, both workers and both brokers drained and exited 0"
say "passed (links over CURVE, keys mounted as files)"
