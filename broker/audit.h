/* audit.h - one JSON line per request that reached the broker, written off the routing loop
 *
 * {"time":"2026-11-30T02:10:00.123Z","client":"billing","op":"token","integration":"acct42:box",
 *  "outcome":"ok","rid":"..."}  (integration and rid are null when the request had none).
 * audit_record copies the record into a bounded in-memory queue and returns; a writer thread
 * drains the queue at least every AUDIT_FLUSH_MS with one write(2) per batch (no stdio buffer),
 * so a crash loses at most the records of the last fraction of a second. A batch the file does not
 * take (a full or failing disk) is kept and tried again every AUDIT_FLUSH_MS, the records after it
 * waiting in the queue; when the queue is full a record is counted as dropped (audit_dropped)
 * rather than blocking the loop (the broker, with FERRULE_AUDIT_FAILURE=refuse, asks audit_room
 * first, so that a token is never forwarded without its record). Nothing here ever sees a request body, so no token can reach
 * the audit log. */
#ifndef FERRULE_AUDIT_H
#define FERRULE_AUDIT_H
#include <stddef.h>
#include <stdint.h>
#include "ops.h"
#include "result.h"

#define AUDIT_QUEUE    16384           /* records waiting for the writer */
#define AUDIT_FLUSH_MS 50
#define AUDIT_STALL_MS 1000            /* a write under way this long counts as failing */

typedef struct audit audit_t;

/* target: a file path (appended, created 0600) or "-" for standard output. NULL with a reason. */
audit_t *audit_new (const char *target, char *err, size_t errlen);
/* Writes what is queued, stops the writer, closes the file. A writer stuck in a write (a reader of
 * standard output that stopped reading) is left after 5 s, with a, to the process's exit. */
void audit_destroy (audit_t **a_p);
/* Queues one record; strings are copied (cut to their limits). integ and rid may be NULL. 0 when
 * the queue was full and the record is lost (counted in audit_dropped), 1 otherwise (a NULL a
 * keeps no records and loses none). */
int audit_record (audit_t *a, const char *client, op_t op, const char *integ, size_t integ_len,
                  const char *outcome, const char *rid, size_t rid_len) FR_MUSTCHECK;
/* Records the queue can take now (SIZE_MAX for a NULL a). Only the writer takes records out, so
 * for the one thread that queues them it can only grow until that thread queues one. */
size_t audit_room (const audit_t *a);
/* Reopens a file target (after log rotation); the writer does it before its next batch. */
void audit_reopen (audit_t *a);
uint64_t audit_dropped (const audit_t *a);   /* queue full */
/* records lost to write errors: what could not be written at
 * the stop */
uint64_t audit_failed (const audit_t *a);
/* 0 while records are not reaching the file: the writer holds a batch it could not write, a
 * record found the queue full since the writer last took from it, or a write has not returned for
 * AUDIT_STALL_MS (a pipe nobody reads, a hung disk: no failure to count, and 16384 records would
 * wait before the queue filled). It turns 1 again at the first write that works (the held batch is
 * tried every AUDIT_FLUSH_MS). */
int audit_writing (const audit_t *a);
/* Says once when a write has not returned for AUDIT_STALL_MS, and again when it has: the writer,
 * held in it, cannot. For the thread that queues records, now and then. */
void audit_watch (audit_t *a);
#endif
