/* lograte.h - a log line that can come thousands of times a second (a refusal, a cut, a request
 * answered with an error) said at most once a second (or once in an interval of the caller's),
 * with a count of the ones held back
 *
 * A flood of such lines in a stall or an attack would cost the loop its time and the disk its
 * space exactly when the operator needs both; the metrics count every event, the log says that
 * it happens and how often. The count of lines held back is never lost: the next line said
 * carries it, or, when none comes, the process's housekeeping asks lograte_due for it. */
#ifndef FERRULE_LOGRATE_H
#define FERRULE_LOGRATE_H
#include <stdint.h>

#define LOGRATE_INTERVAL_MS 1000

typedef struct {
    int64_t  next_ms;      /* lines before this are held back */
    uint64_t held;         /* held back since the last line said */
    int64_t  interval_ms;  /* between two lines said; 0: LOGRATE_INTERVAL_MS */
} lograte_t;               /* zeroed: the first line is said */

/* 1 when the caller says this line now, *held set to how many were held back before it (0: none;
 * say "and N more" when not); 0 when it is held back and counted. */
int lograte_take (lograte_t *lr, int64_t now_ms, uint64_t *held);
/* The same for a line that stands for n events (a batch of them): held back, it counts n. */
int lograte_take_n (lograte_t *lr, int64_t now_ms, uint64_t n, uint64_t *held);
/* For the housekeeping timer: how many lines are held back whose interval has ended with no line
 * to carry their count (the caller logs a summary of them, which counts as the interval's line),
 * or 0. */
uint64_t lograte_due (lograte_t *lr, int64_t now_ms);
#endif
