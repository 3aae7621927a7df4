/* failover.h - the refresh commits a database failover may lose, kept in memory and written again
 *
 * With asynchronous replication, a standby promoted after its primary failed may lack the last
 * transactions the primary had committed and acknowledged. A refresh commit lost that way takes
 * with it the only refresh token the provider still accepts (it rotated the one the promoted
 * server holds), and the journal no longer has it: a record is settled once committed. So every
 * commit of a rotated refresh token is also kept in memory, for keep_ms of connected time. Each
 * time the main connection is made again, the kept commits' integrations are read (generation,
 * status, fingerprint: a thousand a statement). A row that still holds a refresh token one of its
 * kept commits replaced is behind on its own chain: its newest kept commit is written again, by
 * the refresh protocol's compare-and-set at the generation the row has. A row that holds anything
 * else (the kept token, a later one, an import's, a disconnect) is left alone. No refresh claims
 * while the check runs (refresh_send_batch): it could spend the token the row holds. The kept
 * commits survive a restart of the worker: their journal records stay on disk while they are kept,
 * and are read back and checked at start (failover_restore). */
#ifndef FERRULE_WORKER_FAILOVER_H
#define FERRULE_WORKER_FAILOVER_H
#include "context.h"

#define FAILOVER_MAX 100000          /* commits kept at most: past it (or past max_bytes) the oldest
                                        are forgotten, counted */
#define FAILOVER_CARRY_MIN (1 << 20) /* the journal's region, holding kept commits' records, is
                                        carried to its retained file at this length at the
                                        earliest (journal_set_retainer) */

typedef struct failover failover_t;

/* keep_ms 0: nothing is kept (FERRULE_FAILOVER_KEEP_MS=0); max_bytes: the memory the kept commits
 * may take (FERRULE_FAILOVER_KEEP_MAX_MB): a provider's tokens can take kilobytes each, and a burst
 * of refreshes (after an outage) must not take a worker past its memory limit. */
failover_t *failover_new (int64_t keep_ms, size_t max_bytes);
void failover_destroy (failover_t **f_p);
/* A commit of a rotated refresh token, written age_ms ago (0: just now; c and what it points to
 * are copied); spent: the fingerprint of the refresh token the refresh spent. Returns how many
 * commits it forgot (the oldest, past the bounds) or did not keep (this one, while a check covers
 * the rest). */
uint64_t failover_keep (failover_t *f, const store_commit_t *c, const char *spent, int64_t age_ms);
/* A copy of c and what it points to, in one allocation (mem_free_wiped frees it): for a commit
 * whose fate a read decides after its refresh has gone (refresh.c's conflict read). */
store_commit_t *failover_commit_copy (const store_commit_t *c);
/* A rotated commit is in the database: kept (what that forgot counted), and its journal record
 * seq (0: none) settled as retained, in that order, since the journal asks what is kept before
 * it lets a record go. For a refresh's commit and a replayed record's alike. */
void failover_commit_settled (worker_t *w, const store_commit_t *c, const char *spent, int64_t seq);
/* A refresh (or a journal record) of id that continued from one of this worker's commits, having
 * spent its refresh token (spent: the fingerprint the row held) and expecting the generation that
 * commit made (expected), expects the one it makes now if a check wrote that commit again at an
 * earlier generation (the row had lost this worker's commits before it too): its compare-and-set
 * lost otherwise, and its rotated token was dropped as a conflict's while the row held the token
 * it had spent. Returns that generation, or expected. */
int64_t failover_rebased (const failover_t *f, const char *id, const char *spent, int64_t expected);
/* At start: the journal is told what is kept (its records stay on disk while they are; see
 * journal_set_retainer), and the commits an earlier run kept are read back from it and checked as
 * after a reconnection, before the first claim and the journal's replay. Returns how many. */
int failover_restore (failover_t *f, journal_t *j);
/* A connection (the main one or the batch one, whichever comes back first) was made again: the
 * kept commits are checked before the next claim or commit. */
void failover_reconnected (failover_t *f);
/* 1 while a check is under way (claims wait for it). */
int failover_checking (const failover_t *f);
/* 1 when a check found id's row behind commits another worker made, which that worker has not
 * written again yet: a claim of it waits (it would spend a token the provider has replaced). The
 * check also holds the row's lease meanwhile (store_hold_start), so that no other worker's claim
 * spends the token that worker writes back before this one has written its own over it. */
int failover_waits (const failover_t *f, const char *id);
/* The same for a journal record the start-up replay found behind such commits, or whose replay
 * failed (replay_failed: its row locked, the database away; recovery.c): claims of id wait until
 * failover_unhold. A hold per record; ids are copied. failover_held_behind: a failed one's row
 * was found behind since; failover_held_failing: 1 while a hold of id is for a failed replay
 * (what a waiting request is told). */
void failover_hold (failover_t *f, const char *id, int replay_failed);
void failover_unhold (failover_t *f, const char *id);
void failover_held_behind (failover_t *f, const char *id);
int failover_held_failing (const failover_t *f, const char *id);
/* How many integrations failover_waits holds (held ones counted per record). */
size_t failover_waiting (const failover_t *f);
/* Their ids (failover_waiting of them; the caller frees the array, not the strings, before the
 * next change to the waits): the rows whose leases this worker holds while it waits. */
const char **failover_waiting_ids (const failover_t *f, size_t *n);
size_t failover_kept (const failover_t *f);
size_t failover_kept_bytes (const failover_t *f);
uint64_t failover_forgotten (const failover_t *f);
/* Forgets what was kept long enough (while connected, no check under way), and takes the check's
 * next step on a free connection. */
void failover_tick (worker_t *w, int64_t now_ms);
#endif
