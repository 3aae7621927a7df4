#!/usr/bin/env bash
# Checks deploy/ without a cluster and without Docker:
#
#   1. renders deploy/k8s/base and every overlay with "kubectl kustomize" when a kubectl with
#      kustomize v5 or later is installed, else with tests/deploy/kustomize.mjs (Debian 12's
#      kubectl has kustomize v2, too old for these kustomizations); with such a kubectl, also
#      renders each with kustomize.mjs (and the kustomizations of tests/deploy/kustomize-fixtures)
#      and fails unless both give the same objects, so that kustomize.mjs stays faithful
#   2. validates every rendered object offline against the Kubernetes API schema of its kind,
#      unknown fields included (tests/deploy/validate.mjs, npm package kubernetes-models)
#   3. checks Ferrule's policies: resources, probes, security context, the Secret template holds
#      placeholders only, the workers' terminationGracePeriodSeconds above their longest drain
#      (the later of FERRULE_DRAIN_MS and the provider timeout, plus the statement timeout plus 0.5 s) plus 5 s
#      (the gateway's above FERRULE_GATEWAY_DRAIN_MS, itself above the gateway's longest broker
#      call, and the brokers' above that call's deadline), the brokers' memory limit above their
#      documented bounds, the gateway's providers each with a client id for the workers, the
#      disruption budgets of brokers and gateways evicting unhealthy pods (AlwaysAllow) and the
#      workers' not (IfHealthyBudget), the journal on a
#      persistent volume, only variables the programs read, objects that refer to each other exist,
#      a CronJob that prunes old events (never two runs at once, its days above twice the
#      workers' webhook max age)
#   4. proves the checks bite: a broken copy of the base must fail them, both a broken rendering
#      and a broken copy of the sources rendered by kustomize.mjs
#   5. loads the providers ConfigMap with the worker's catalog loader (when it is built)
#   6. reads the Dockerfile: context filter, build inputs, runtime packages for the linked libraries
#   7. checks that docs/operations.md documents every variable of the configuration tables
#   8. reads deploy/README.md's install steps: the allow-lists are complete before their Secret
#      is made, and the ferrulectl check pod passes the restricted Pod Security Standard; a
#      change to ferrule-access or ferrule-gateway reloads every workload that mounts it; the
#      upgrade rolls the workers, the brokers and the gateways in turn; and every "kill -HUP 1"
#      in deploy/ and docs/ goes through the shell (the image has no kill program)
#   9. reads deploy/ferrule.env.example as systemd's EnvironmentFile= and docker --env-file do:
#      comments on lines of their own, every NAME=VALUE (commented out or not) a variable a
#      program reads, with no blank or "#" in its value, and an integer where the program wants one
#
# Run from the repository root (ctest does: "ctest -L deploy"). Environment:
#   FERRULE_DEPLOY_CACHE            where the npm packages go (default build/tests/deploy/node)
#   FERRULE_DEPLOY_CHECK_PROVIDERS  the deploy_check_providers program (ctest sets it)
#   FERRULE_DEPLOY_BINARIES         the five programs, ':'-separated (ctest sets it)
#   FERRULE_KUBECTL                 the kubectl to render with (default: the one on PATH); "none"
#                                   renders with kustomize.mjs only, as on a machine without one
#
# Exit 0 passed, 1 failed, 77 skipped (node or npm missing; with CI=true or FERRULE_TEST_STRICT=1,
# which scripts/test sets, a missing tool fails instead). The npm packages are pinned in
# tests/deploy/package-lock.json; when they cannot be installed the test fails, it never passes
# without having validated.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

say () { echo "test_manifests: $*"; }
fail () { echo "test_manifests: FAILED: $*" >&2; exit 1; }

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        # in CI and under scripts/test a skip would pass without validating anything
        if [ "${CI:-}" = true ] || [ "${FERRULE_TEST_STRICT:-}" = 1 ]; then
            fail "$tool is not installed (scripts/install-deps, or apt-get install nodejs npm)"
        fi
        say "skipped: $tool is not installed (apt-get install nodejs npm)"
        exit 77
    fi
done

# kubectl renders when it has kustomize v5 or later (kubectl 1.27 and later); kustomize.mjs always
# does, and is compared with kubectl when there is one
kubectl=${FERRULE_KUBECTL-$(command -v kubectl || true)}
[ "$kubectl" != none ] || kubectl=""
if [ -n "$kubectl" ]; then
    kustomize_major=$("$kubectl" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9][0-9]*\)\..*/\1/p')
    if [ -z "$kustomize_major" ] || [ "$kustomize_major" -lt 5 ]; then
        # kubectl before 1.24 (Debian 12 has 1.20, with kustomize v2) names no kustomize version
        say "note: $kubectl has ${kustomize_major:+kustomize v$kustomize_major}${kustomize_major:-no kustomize version in \"kubectl version --client\"}, and deploy/k8s needs v5 or later: rendering with tests/deploy/kustomize.mjs only"
        kubectl=""
    fi
fi
command -v jq >/dev/null 2>&1 || fail "jq is not installed (apt-get install jq)"

CACHE=${FERRULE_DEPLOY_CACHE:-$ROOT/build/tests/deploy/node}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferrule-deploy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---- the npm packages, pinned by package-lock.json ----
mkdir -p "$CACHE"
stamp=$CACHE/.installed-lock.sha256
want=$(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -d "$CACHE/node_modules/kubernetes-models" ]; then
    say "installing the pinned npm packages into $CACHE"
    cp "$HERE/package.json" "$HERE/package-lock.json" "$CACHE/"
    rm -f "$stamp"
    if ! npm ci --prefix "$CACHE" --cache "$CACHE/.npm" --prefer-offline --no-audit --no-fund \
            --loglevel=error >"$WORK/npm.log" 2>&1; then
        cat "$WORK/npm.log" >&2
        fail "could not install the npm packages of tests/deploy/package-lock.json (is the npm registry reachable? $(npm config get registry))"
    fi
    echo "$want" >"$stamp"
fi
MODULES=$CACHE/node_modules

# ---- the variables each program reads: its configuration table ----
names () { grep -ohE '"FERRULE_[A-Z0-9_]+"' "$@" | tr -d '"' | sort -u | jq -R . | jq -sc .; }
# FERRULE_HTTP_BIND (/healthz, /readyz, /metrics) is being added to both tables.
jq -n --argjson broker "$(names broker/main.c)" --argjson worker "$(names worker/main.c)" \
      --argjson migrate "$(names migrations/migrate.c)" --argjson gateway "$(names gateway/main.c)" \
      '{broker: ($broker + ["FERRULE_HTTP_BIND"] | unique), worker: ($worker + ["FERRULE_HTTP_BIND"] | unique), migrate: $migrate, gateway: $gateway}' \
      >"$WORK/known-env.json"
[ "$(jq '.worker | length' "$WORK/known-env.json")" -gt 5 ] || fail "found no configuration table in worker/main.c"

# ---- 1. render ----
kustomize_js () { node "$HERE/kustomize.mjs" --modules "$MODULES" "$@"; }
# renders the kustomization $1 into $2 with kubectl, and checks that kustomize.mjs renders the same
render_both () {
    if ! "$kubectl" kustomize "$1" >"$2" 2>"$2.err"; then
        cat "$2.err" >&2
        fail "$kubectl kustomize $1 failed"
    fi
    kustomize_js --compare "$2" "$1" >/dev/null \
        || fail "tests/deploy/kustomize.mjs renders $1 differently from $kubectl kustomize (lines above): fix kustomize.mjs"
}
inputs=()
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
    dir=${dir%/}
    label=$(basename "$dir")
    if [ -n "$kubectl" ]; then
        render_both "$dir" "$WORK/$label.yaml"
        how="kubectl kustomize, and kustomize.mjs renders the same"
    else
        kustomize_js "$dir" >"$WORK/$label.yaml" || fail "tests/deploy/kustomize.mjs could not render $dir (lines above)"
        how="kustomize.mjs"
    fi
    say "rendered $dir: $(grep -c '^kind:' "$WORK/$label.yaml") objects ($how)"
    inputs+=("$label=$WORK/$label.yaml")
done
if [ -n "$kubectl" ]; then
    fixtures=0
    for dir in "$HERE"/kustomize-fixtures/*/; do
        [ -f "$dir/kustomization.yaml" ] || continue
        render_both "${dir%/}" "$WORK/fixture.yaml"
        fixtures=$((fixtures + 1))
    done
    say "kustomize.mjs renders the $fixtures kustomizations of tests/deploy/kustomize-fixtures as kubectl does"
fi
[ ${#inputs[@]} -ge 2 ] || fail "expected the base and at least one overlay under deploy/k8s"

# ---- the guide makes a CURVE key for every worker pod the autoscaler may start ----
# (a pod without its key exits at start: pods past the guide's count crash-looped exactly when
# the load called for them)
keys=$(grep -oE '^ *WORKERS=[0-9]+' deploy/README.md | head -n 1 | cut -d= -f2)
[ -n "$keys" ] || fail "deploy/README.md sets no WORKERS= (the worker keys its guide makes)"
for f in "$WORK"/*.yaml; do
    most=$(awk '/^kind: HorizontalPodAutoscaler/ { hpa = 1 } /^---/ { hpa = 0 } hpa && /^  maxReplicas:/ { print $2 }' "$f" \
           | sort -n | tail -n 1)
    [ -z "$most" ] || [ "$most" -le "$keys" ] \
        || fail "$(basename "$f" .yaml): the workers' autoscaler may start $most pods, and deploy/README.md makes keys for $keys"
done

# ---- 2 and 3. schemas and policies ----
mkdir -p "$WORK/providers"
node "$HERE/validate.mjs" --modules "$MODULES" --known-env "$WORK/known-env.json" \
    --secret-template deploy/k8s/base/secret.template.yaml --providers-out "$WORK/providers" \
    "${inputs[@]}" || fail "the manifests do not pass validation (lines above)"

# ---- 4. the checks bite: each defect below must be reported ----
# (the three unhealthyPodEvictionPolicy lines swap AlwaysAllow and IfHealthyBudget)
defects=(-e 's/publishNotReadyAddresses: true/publishNotReadyAdresses: true/'
         -e 's/terminationGracePeriodSeconds: 40/terminationGracePeriodSeconds: 20/'
         -e 's/containerPort: 5556/containerPort: "5556"/'
         -e 's/allowPrivilegeEscalation: false/allowPrivilegeEscalation: true/'
         -e 's/name: ferrule-migrate-secrets/name: ferrule-secrets/'
         -e 's/unhealthyPodEvictionPolicy: AlwaysAllow/unhealthyPodEvictionPolicy: SWAPPED/'
         -e 's/unhealthyPodEvictionPolicy: IfHealthyBudget/unhealthyPodEvictionPolicy: AlwaysAllow/'
         -e 's/unhealthyPodEvictionPolicy: SWAPPED/unhealthyPodEvictionPolicy: IfHealthyBudget/'
         -e 's/value: "31000"/value: "25000"/'
         -e 's/value: "15000"/value: "39000"/'
         -e 's/memory: 1Gi/memory: 600Mi/'
         -e 's/value: box,google$/value: box,google,github/'
         -e 's/--older-than=90/--older-than=1/'
         -e 's/concurrencyPolicy: Forbid/concurrencyPolicy: Allow/')
leaked () {
    printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: leaked\n  labels:\n    app.kubernetes.io/name: ferrule\nstringData:\n  FERRULE_ENCRYPTION_KEY: c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\n'
}
{
    sed "${defects[@]}" "$WORK/base.yaml"
    leaked
} >"$WORK/broken.yaml"
# expect_rejected LABEL FILE WHAT: validate.mjs must report each defect of the broken base in FILE
expect_rejected () {
    if node "$HERE/validate.mjs" --modules "$MODULES" --known-env "$WORK/known-env.json" \
            --secret-template deploy/k8s/base/secret.template.yaml "$1=$2" >"$WORK/$1.out" 2>&1; then
        cat "$WORK/$1.out" >&2
        fail "validate.mjs accepted $3"
    fi
    for expect in 'unknown field "/spec/publishNotReadyAdresses"' 'terminationGracePeriodSeconds 20 does not exceed' \
                  'containerPort must be integer' 'does not set allowPrivilegeEscalation: false' \
                  'Secret/leaked: stringData.FERRULE_ENCRYPTION_KEY is not a placeholder' \
                  'comes from Secret "ferrule-secrets"; this container must read "ferrule-migrate-secrets"' \
                  'does not exceed the longest deadline a broker answers within' \
                  'FERRULE_GATEWAY_DRAIN_MS 25000 does not exceed the gateway'"'"'s longest broker call' \
                  'PodDisruptionBudget/ferrule-gateway: does not set unhealthyPodEvictionPolicy: AlwaysAllow' \
                  'PodDisruptionBudget/ferrule-worker: sets unhealthyPodEvictionPolicy: AlwaysAllow; the workers'"'"' must be IfHealthyBudget' \
                  'FERRULE_PROVIDER_TIMEOUT_MS 39000, for a commit or a provider call still out when it ends, + the statement timeout 1000 + 500' \
                  'container "broker": resources.limits.memory 600Mi is below what the broker may hold' \
                  'offers "github", whose client id FERRULE_GITHUB_CLIENT_ID the workers are not given' \
                  '--older-than=1 days is below twice the workers'"'"' FERRULE_WEBHOOK_MAX_AGE_S 86400 s' \
                  'CronJob/ferrule-prune-events: sets concurrencyPolicy: Allow; must be Forbid'; do
        grep -qF -- "$expect" "$WORK/$1.out" || { cat "$WORK/$1.out" >&2; fail "validate.mjs did not report, for $3: $expect"; }
    done
    say "$3 is rejected for each of its 15 defects"
}
expect_rejected broken "$WORK/broken.yaml" "a broken copy of the rendered base"
# The same defects in a copy of the sources, rendered by kustomize.mjs: what it renders is what
# gets checked when there is no kubectl, so a defect must survive it.
mkdir -p "$WORK/broken-src"
cp -R deploy/k8s "$WORK/broken-src/"
sed -i "${defects[@]}" "$WORK"/broken-src/k8s/base/*.yaml
leaked >>"$WORK/broken-src/k8s/base/networkpolicies.yaml"
kustomize_js "$WORK/broken-src/k8s/base" >"$WORK/broken-src.yaml" \
    || fail "tests/deploy/kustomize.mjs could not render the broken copy of deploy/k8s/base (lines above)"
expect_rejected broken-src "$WORK/broken-src.yaml" "a broken copy of deploy/k8s/base rendered by kustomize.mjs"
# The example's webhooks: their file read from the providers' ConfigMap instead of their Secret,
# and a lease that does not outlast an attempt, must be reported too.
grep -q 'FERRULE_WEBHOOKS_FILE' "$WORK/example.yaml" \
    || fail "overlays/example sets no FERRULE_WEBHOOKS_FILE: its webhooks patch is not applied"
sed -e 's|/etc/ferrule/webhooks/webhooks.json|/etc/ferrule/providers/webhooks.json|' \
    -e 's|^\( *\)- name: FERRULE_WEBHOOKS_FILE$|\1- name: FERRULE_WEBHOOK_LEASE_MS\n\1  value: "10400"\n&|' \
    "$WORK/example.yaml" >"$WORK/broken-webhooks.yaml"
if node "$HERE/validate.mjs" --modules "$MODULES" --known-env "$WORK/known-env.json" \
        --secret-template deploy/k8s/base/secret.template.yaml "broken-webhooks=$WORK/broken-webhooks.yaml" \
        >"$WORK/broken-webhooks.out" 2>&1; then
    cat "$WORK/broken-webhooks.out" >&2
    fail "validate.mjs accepted webhooks read from a ConfigMap"
fi
for expect in 'FERRULE_WEBHOOKS_FILE "/etc/ferrule/providers/webhooks.json" is on volume "providers", not mounted from a Secret' \
              'FERRULE_WEBHOOK_LEASE_MS 10400 does not exceed FERRULE_WEBHOOK_TIMEOUT_MS 10000 by 500 ms'; do
    grep -qF -- "$expect" "$WORK/broken-webhooks.out" \
        || { cat "$WORK/broken-webhooks.out" >&2; fail "validate.mjs did not report, for the example's broken webhooks: $expect"; }
done
say "the example's webhooks, from a ConfigMap and with a short lease, are rejected for both"

# ---- 5. the providers ConfigMap loads in the worker's catalog ----
checker=${FERRULE_DEPLOY_CHECK_PROVIDERS:-}
[ -n "$checker" ] || checker=$ROOT/build/tests/deploy/deploy_check_providers
if [ -x "$checker" ]; then
    for f in "$WORK"/providers/*.providers.json; do
        "$checker" "$f" \
            || fail "the providers ConfigMap of $(basename "$f" .providers.json) does not load in the worker's catalog"
    done
else
    say "note: $checker is not built: the providers ConfigMap was not loaded by the catalog (cmake --build build)"
fi

# ---- 6. the Dockerfile ----
# Debian packages that provide the shared libraries the programs link (libc6 is in every image).
runtime_packages=""
IFS=: read -r -a binaries <<<"${FERRULE_DEPLOY_BINARIES:-}"
if [ ${#binaries[@]} -eq 0 ]; then
    for b in build/broker/ferrule-broker build/worker/ferrule-worker build/migrations/ferrule-migrate build/ctl/ferrulectl; do
        [ -x "$b" ] && binaries+=("$b")
    done
fi
if [ ${#binaries[@]} -gt 0 ] && command -v objdump >/dev/null && command -v dpkg >/dev/null; then
    for b in "${binaries[@]}"; do
        if [ ! -x "$b" ]; then
            say "note: $b is not built: its libraries were not compared with the runtime packages"
            continue
        fi
        for lib in $(objdump -p "$b" | awk '$1 == "NEEDED" { print $2 }'); do
            # ASan builds link the sanitizer runtimes, which no release image carries
            case "$lib" in libasan.so*|libubsan.so*|libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*) continue ;; esac
            pkg=$(dpkg -S "*/$lib" 2>/dev/null | head -n 1 | cut -d: -f1) || true
            [ -n "$pkg" ] || fail "no Debian package provides $lib, which $b links"
            runtime_packages="$runtime_packages $pkg"
        done
    done
    runtime_packages=$(tr ' ' '\n' <<<"$runtime_packages" | sort -u | tr '\n' ' ')
    say "the programs link libraries from:$([ -n "$runtime_packages" ] && echo " $runtime_packages")"
else
    say "note: no built programs (or no objdump/dpkg): the runtime packages were not compared with the linked libraries"
fi
node "$HERE/dockerfile.mjs" --modules "$MODULES" --root "$ROOT" --runtime-packages "$runtime_packages" \
    || fail "deploy/docker/Dockerfile does not pass its checks (lines above)"

# ---- 7. docs/operations.md documents every variable the programs read ----
missing=""
for v in $(jq -r '.broker[], .worker[], .migrate[], .gateway[]' "$WORK/known-env.json" | sort -u); do
    grep -q "\`$v\`" docs/operations.md || missing="$missing $v"
done
[ -z "$missing" ] || fail "docs/operations.md does not document:$missing (its configuration reference lists every variable)"
say "docs/operations.md documents all $(jq -r '.broker[], .worker[], .migrate[], .gateway[]' "$WORK/known-env.json" | sort -u | wc -l) variables"

# ---- 8. deploy/README.md's install steps work in order ----
node "$HERE/readme.mjs" --modules "$MODULES" --rendered "$WORK/base.yaml" deploy/README.md \
    || fail "deploy/README.md's install steps do not pass their checks (lines above)"
# "kubectl exec POD -- kill -HUP 1" finds no kill in the image (Debian's is in procps, which the
# runtime stage does not install): the signal must go through the shell's builtin
bare=$(grep -rnE 'kill -HUP 1\b' deploy docs | grep -vF "sh -c 'kill -HUP 1'" || true)
[ -z "$bare" ] || fail "these signal PID 1 with a kill program the image does not have; write sh -c 'kill -HUP 1' (the shell's builtin):
$bare"
say "every \"kill -HUP 1\" in deploy/ and docs/ goes through the shell's builtin"

# ---- 9. deploy/ferrule.env.example as an EnvironmentFile= / --env-file ----
# FERRULE_ENV_EXAMPLE: another file to check (the test of this check)
envfile=${FERRULE_ENV_EXAMPLE:-deploy/ferrule.env.example}
grep -ohE '"FERRULE_[A-Z0-9_]+", CONFIG_INT' broker/main.c worker/main.c gateway/main.c | cut -d'"' -f2 | sort -u >"$WORK/int-vars"
[ -s "$WORK/int-vars" ] || fail "found no integer settings (CONFIG_INT) in the configuration tables"
jq -r '.[][]' "$WORK/known-env.json" | sort -u >"$WORK/all-vars"
bad=0
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    case "$line" in
        "") continue ;;
        "#FERRULE_"*=*) assignment=${line#\#} ;;          # commented out: to be uncommented as it is
        "#"*) continue ;;
        *) assignment=$line ;;
    esac
    name=${assignment%%=*}
    value=${assignment#*=}
    where="$envfile:$lineno"
    if ! [[ "$name" =~ ^FERRULE_[A-Z0-9_]+$ ]]; then
        echo "test_manifests: $where: \"$line\" is neither a comment nor NAME=VALUE" >&2; bad=1; continue
    fi
    if [[ "$value" == *"#"* || "$value" =~ [[:space:]] ]]; then
        echo "test_manifests: $where: the value of $name holds a blank or \"#\" (\"$value\"): systemd and docker keep a trailing comment in the value; put it on a line of its own above" >&2
        bad=1
    fi
    base=${name%_FILE}
    if ! grep -qxF "$name" "$WORK/all-vars" && ! grep -qxF "$base" "$WORK/all-vars" \
            && ! [[ "$base" =~ ^FERRULE_[A-Z0-9_]+_CLIENT_(ID|SECRET)$ ]]; then
        echo "test_manifests: $where: no program reads $name" >&2; bad=1
    fi
    if grep -qxF "$name" "$WORK/int-vars" && ! [[ "$value" =~ ^-?[0-9]+$ ]]; then
        echo "test_manifests: $where: $name takes an integer, not \"$value\"" >&2; bad=1
    fi
done <"$envfile"
[ "$bad" -eq 0 ] || fail "$envfile does not read as an EnvironmentFile= or --env-file (lines above)"
say "$envfile reads as an EnvironmentFile= and an --env-file ($(grep -cE '^#?FERRULE_' "$envfile") settings)"

say "passed"
