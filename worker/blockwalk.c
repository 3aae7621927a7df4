/* blockwalk.c - a table walked a range of blocks at a time (see blockwalk.h) */
#include "blockwalk.h"
#include <assert.h>
#include <stddef.h>

void
blockwalk_init (blockwalk_t *b)
{
    assert (b);
    b->from = 0;
    b->blocks = BLOCKWALK_FIRST;
    b->sent_ms = 0;
}

void
blockwalk_restart (blockwalk_t *b)
{
    assert (b);
    if (b->blocks < BLOCKWALK_MIN || b->blocks > BLOCKWALK_MAX)
        b->blocks = BLOCKWALK_FIRST;            /* never walked: a zeroed value */
    b->from = 0;
}

void
blockwalk_sent (blockwalk_t *b, int64_t now_ms)
{
    b->sent_ms = now_ms;
}

int64_t
blockwalk_took_ms (const blockwalk_t *b, int64_t now_ms)
{
    return now_ms > b->sent_ms ? now_ms - b->sent_ms : 0;
}

int
blockwalk_range_done (blockwalk_t *b, int64_t now_ms, int64_t timeout_ms, int64_t table_blocks)
{
    int64_t took = blockwalk_took_ms (b, now_ms);
    b->from += b->blocks;
    /* a quarter of the timeout leaves room for a slower range next (a busier server, denser
     * blocks) without a timeout; a range that fails costs its whole time again */
    if (took * 8 < timeout_ms && b->blocks < BLOCKWALK_MAX)
        b->blocks *= 2;
    else if (took * 2 > timeout_ms && b->blocks > BLOCKWALK_MIN)
        b->blocks /= 2;
    return b->from >= table_blocks;
}

int
blockwalk_range_failed (blockwalk_t *b)
{
    int smaller = b->blocks > BLOCKWALK_MIN;
    b->blocks = b->blocks / 4 > BLOCKWALK_MIN ? b->blocks / 4 : BLOCKWALK_MIN;
    return smaller;
}
