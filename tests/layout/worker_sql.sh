#!/bin/sh
# worker_sql.sh - every SQL statement of the worker is in its store layer (docs/architecture.md):
# outside worker/store*.c and worker/store*.h no file includes store_internal.h (the private
# header that runs statements) or libpq-fe.h, names PGresult, calls a libpq function, or calls
# store_exec or store_batch_start.
#
#   worker_sql.sh WORKER_DIR
#
# KNOWN would list files not moved yet, each with why; it is empty: events.c, the last, now gets
# its rows as structs from store_events.c.
set -eu
dir=${1:?usage: worker_sql.sh WORKER_DIR}
[ -d "$dir" ] || { echo "worker_sql: \"$dir\" is not a directory" >&2; exit 2; }

KNOWN=""

found=0
checked=0
for f in "$dir"/*.c "$dir"/*.h; do
    [ -e "$f" ] || continue
    base=$(basename "$f")
    case "$base" in store*) continue ;; esac
    checked=$((checked + 1))
    known=0
    for k in $KNOWN; do [ "$k" = "$base" ] && known=1; done
    if grep -n '#include *"store_internal\.h"' "$f" >/dev/null \
    || grep -nE '\<(store_exec|store_batch_start) *\(' "$f" >/dev/null; then
        echo "worker_sql: worker/$base runs statements itself: move them into a worker/store_*.c file" >&2
        found=1
    fi
    if [ "$known" = 0 ] && grep -nE '#include *<libpq-fe\.h>|\<PGresult\>|\<PQ[a-z]+ *\(' "$f" >/dev/null; then
        echo "worker_sql: worker/$base uses libpq (libpq-fe.h, PGresult or a PQ call): only the store layer reads results" >&2
        found=1
    fi
done
# a glob that matched nothing must not pass
[ "$checked" -gt 10 ] || { echo "worker_sql: only $checked files found in \"$dir\"" >&2; exit 1; }
[ "$found" = 0 ] && echo "worker_sql: $checked files outside the store layer run no SQL"
exit "$found"
