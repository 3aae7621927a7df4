#!/usr/bin/env bash
# The image scripts/image builds is ferrule:VERSION, VERSION being project(ferrule VERSION ...)
# in CMakeLists.txt. Checks that the Kubernetes manifests ask for that tag, in the base and in
# every overlay that sets one, and that the Dockerfile's example command names it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

fail () { echo "check_version: FAILED: $*" >&2; exit 1; }

VERSION=$(scripts/image --version)
[ -n "$VERSION" ] || fail "scripts/image --version printed nothing"

# the "images:" entries of a kustomization: "name newName newTag" per entry
images () {
    awk '
        /^images:/ { inimg = 1; next }
        inimg && /^[^ #-]/ { inimg = 0 }
        inimg && /- name:/ { if (name != "") print name, nname, tag; name = $3; nname = "-"; tag = "-" }
        inimg && /newName:/ { nname = $2 }
        inimg && /newTag:/ { tag = $2; gsub(/"/, "", tag) }
        END { if (name != "") print name, nname, tag }
    ' "$1"
}

base=$(images deploy/k8s/base/kustomization.yaml)
[ "$base" = "ferrule - $VERSION" ] \
    || fail "deploy/k8s/base/kustomization.yaml should map image \"ferrule\" to newTag \"$VERSION\" (the version of CMakeLists.txt that scripts/image tags), it has: ${base:-no images entry}"
for k in deploy/k8s/overlays/*/kustomization.yaml; do
    while read -r name _ tag; do
        [ "$name" = ferrule ] || fail "$k renames an image \"$name\"; the manifests use \"ferrule\""
        [ "$tag" = - ] || [ "$tag" = "$VERSION" ] || fail "$k sets newTag \"$tag\", but scripts/image builds ferrule:$VERSION"
    done < <(images "$k")
done
for f in deploy/k8s/base/*.yaml; do
    if grep -E '^\s+image:' "$f" | grep -vqE '^\s+image: ferrule$'; then
        fail "$f names an image other than \"ferrule\" (kustomization.yaml sets its tag)"
    fi
done
grep -q "ferrule:$VERSION" deploy/docker/Dockerfile || fail "deploy/docker/Dockerfile's build example does not name ferrule:$VERSION"
echo "check_version: the manifests and the Dockerfile name ferrule:$VERSION, as scripts/image builds it"
