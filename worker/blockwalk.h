/* blockwalk.h - a walk over a table a range of its blocks at a time (one TID range scan per
 * statement), each range sized to take about a quarter of the statement timeout. For the work no
 * index serves and one statement over a table of the capacity model's size would outlast any
 * timeout: the start-up release of an earlier run's leases (recovery.c) and the count of values
 * on retired keys (keystats.c). A value the caller embeds; it knows nothing of the database. */
#ifndef FERRULE_BLOCKWALK_H
#define FERRULE_BLOCKWALK_H
#include <stdint.h>

#define BLOCKWALK_MIN 16                /* 128 kB */
#define BLOCKWALK_FIRST 512
#define BLOCKWALK_MAX 16384             /* 128 MB */

typedef struct {
    int64_t from;                       /* the next range's first block */
    int64_t blocks;                     /* and its size */
    int64_t sent_ms;                    /* monotonic: when that range's statement went out */
} blockwalk_t;

/* From block 0, with a first range of BLOCKWALK_FIRST blocks. */
void blockwalk_init (blockwalk_t *b);
/* From block 0 again, keeping the size the last walk learned. */
void blockwalk_restart (blockwalk_t *b);
/* The next range's statement went out at now_ms. */
void blockwalk_sent (blockwalk_t *b, int64_t now_ms);
/* How long the range in flight has taken by now_ms. */
int64_t blockwalk_took_ms (const blockwalk_t *b, int64_t now_ms);
/* The range's statement succeeded at now_ms: the walk moves past it, and the next range is doubled
 * after one that took less than an eighth of timeout_ms, halved after one that took more than half.
 * 1 when the walk has passed table_blocks (the table's size as that statement saw it): done. */
int blockwalk_range_done (blockwalk_t *b, int64_t now_ms, int64_t timeout_ms, int64_t table_blocks);
/* The range's statement failed in a way its size may explain: the same range next, a quarter the
 * size. 1 when it was larger than BLOCKWALK_MIN, so that a smaller one may fit the timeout and is
 * worth trying at once; 0 when it was already the smallest, and a retry should wait. A failure no
 * size explains keeps the range: the release (recovery.c), which can meet a row lock, calls this
 * only after a statement timeout; the count (keystats.c), a read, meets no row lock. */
int blockwalk_range_failed (blockwalk_t *b);
#endif
