/* lograte.c - lines said at most once an interval, with a count of the ones held back */
#include "lograte.h"
#include <assert.h>
#include <stddef.h>

static int64_t
lograte_interval (const lograte_t *lr)
{
    return lr->interval_ms > 0 ? lr->interval_ms : LOGRATE_INTERVAL_MS;
}

int
lograte_take (lograte_t *lr, int64_t now_ms, uint64_t *held)
{
    return lograte_take_n (lr, now_ms, 1, held);
}

int
lograte_take_n (lograte_t *lr, int64_t now_ms, uint64_t n, uint64_t *held)
{
    assert (lr && held);
    if (now_ms < lr->next_ms) {
        lr->held += n;
        return 0;
    }
    *held = lr->held;
    lr->held = 0;
    lr->next_ms = now_ms + lograte_interval (lr);
    return 1;
}

uint64_t
lograte_due (lograte_t *lr, int64_t now_ms)
{
    assert (lr);
    if (lr->held == 0 || now_ms < lr->next_ms)
        return 0;
    uint64_t n = lr->held;
    lr->held = 0;
    lr->next_ms = now_ms + lograte_interval (lr);
    return n;
}
