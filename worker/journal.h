/* journal.h - a local write-ahead file for rotated tokens: once a provider has rotated a refresh
 * token, the new one (sealed) is written here before the database commit is tried, and the sync
 * thread's fdatasync runs alongside that commit, so a failed commit never loses it, and a crash
 * loses it only inside the window from the answer to whichever of the sync and the commit ends
 * first (docs/architecture.md, "The crash window"). Replayed at start. */
#ifndef FERRULE_JOURNAL_H
#define FERRULE_JOURNAL_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "store_chain.h"

typedef struct journal journal_t;

/* Opens (creating, mode 0600) the journal at path. NULL with a reason on failure. */
journal_t *journal_open (const char *path, char *err, size_t errlen);
void journal_close (journal_t **j_p);
/* Appends a commit that is not yet in the database; spent (may be NULL): the fingerprint of the
 * refresh token it replaces, as the database holds it (journal_retained gives it back). Returns
 * its sequence (> 0), or -1. Not on disk until journal_sync: the loop writes every record of a
 * turn, then syncs once for all of them. */
int64_t journal_append (journal_t *j, const store_commit_t *c, const char *spent);
/* Flushes appended records to disk (fdatasync) before it returns; 0, or -1 (logged). */
int journal_sync (journal_t *j);
/* The loop's sync, on a thread of the journal's own so that the loop never waits for the disk:
 * journal_sync_start asks for every record appended so far (the first call starts the thread;
 * without one it syncs before it returns); journal_sync_fd is readable when a sync has ended;
 * journal_synced clears that and says how many of the journal_appended records are on disk, and
 * when (at_us, monotonic: the end of the sync that put them there, or now when that is not known). */
uint64_t journal_appended (const journal_t *j);
int journal_sync_start (journal_t *j);
int journal_sync_fd (const journal_t *j);
uint64_t journal_synced (journal_t *j, int64_t *at_us);
/* Marks a record settled (committed, or superseded). Rewrites the file empty once nothing is
 * outstanding and nothing it holds is retained (below). A region that stays (some record is
 * always outstanding under load, or one is stuck) is rolled once it is 4 MB long: the outstanding
 * records are copied, under their own sequences, to the start of the file "<path>.retained",
 * which is synced and takes the journal's name in one atomic exchange of the two names. */
void journal_done (journal_t *j, int64_t seq);
/* The same for the commit of a rotated refresh token: the database has it, but a failover to an
 * asynchronous standby can still lose it (worker/failover.c), so its record stays on disk while
 * the retainer holds the commit, for a worker started again to read back (journal_retained). */
void journal_done_retain (journal_t *j, int64_t seq);

/* The retainer: what the worker holds against a failover. Says how many commits it holds, and
 * when it kept the oldest of them (*oldest_ms, monotonic). */
typedef size_t (journal_retainer_fn) (void *arg, int64_t *oldest_ms);
/* With a retainer that holds commits, a live region holding retained records is not emptied. Once
 * it is carry_min bytes long (and everything is on disk), it is rolled as above (the carry): the
 * region is then the retained file's, and the journal goes on in the other file. The exchange
 * waits until the retainer holds nothing the retained file had before (its oldest commit was kept
 * after that file was carried). So the disk always has each commit the retainer holds, in one file
 * or the other, and only outstanding records are copied (none, when nothing is outstanding: then
 * the cost is a rename, and the directory's sync with the next flush). */
void journal_set_retainer (journal_t *j, journal_retainer_fn *fn, void *arg, size_t carry_min);
typedef void (journal_retained_fn) (void *arg, const store_commit_t *c, const char *spent, int64_t age_ms);
/* At start: every retained commit on disk (the records settled by journal_done_retain in the
 * retained file, then in the journal), oldest first; age_ms: how long before the newest of them
 * it settled (so the time the worker was down does not count). The commit's fields live only
 * during the call. Returns how many, or -1 on a read error. */
int journal_retained (journal_t *j, journal_retained_fn *fn, void *arg);
/* spent: as journal_append was given it (NULL when it was not) */
typedef void (journal_replay_fn) (void *arg, int64_t seq, const store_commit_t *c, const char *spent);
/* Calls fn for every record not yet settled, oldest first. Returns how many, or -1 on a read error. */
int journal_replay (journal_t *j, journal_replay_fn *fn, void *arg);
size_t journal_outstanding (const journal_t *j);
/* The outstanding records' bytes, as the roll counts them to decide whether it may copy them. */
size_t journal_outstanding_bytes (const journal_t *j);
/* Flushes that failed, ever. After each, the lines not known to be on disk are written again and
 * the sync retried (journal_synced, journal_sync). */
uint64_t journal_sync_failures (const journal_t *j);
/* For tests: the call that flushes the file to disk (fdatasync, the default), so that a test can
 * make it fail as a disk would. Returns 0, or -1 with errno set. */
typedef int (journal_flush_fn) (int fd, void *arg);
void journal_set_flush (journal_t *j, journal_flush_fn *fn, void *arg);

#define JOURNAL_MAX_SEQ (INT64_C (1) << 53)     /* sequence numbers from here on are not ours */

/* The pure part of journal_replay, for the fuzzer and the tests: one line (len bytes) as a JSON
 * object the caller decrefs, with its "seq" (> 0 for a record) and "done" (> 0 for a settled
 * marker), both below JOURNAL_MAX_SEQ; NULL for an unreadable line. */
json_t *journal_parse_line (const char *line, size_t len, int64_t *seq, int64_t *done);
/* A record's commit into c: strings borrowed from o, ciphertexts decoded into new buffers the
 * caller frees (c->access_ct, c->refresh_ct, NULL when not base64). 0, or -1 when incomplete. */
int journal_read_record (const json_t *o, store_commit_t *c);
#endif
