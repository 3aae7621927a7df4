/* pgnotice.h - what a PostgreSQL server says outside an answer (a RAISE, a WARNING, the FATAL that
 * ends a terminated session), read once for every process that routes it to its own output
 * instead of libpq's bare "NOTICE:  ..." lines on stderr */
#ifndef FERRULE_PGNOTICE_H
#define FERRULE_PGNOTICE_H
#include <libpq-fe.h>
#include <stddef.h>

#define PGNOTICE_MAX 300              /* bytes of a notice's message that are kept */

/* The notice's primary message into text (textlen bytes; PGNOTICE_MAX + 8 holds any), made
 * printable and cut: a message can quote a statement's parameter. *severity (may be NULL) gets
 * the severity as the server names it in English ("WARNING"), or "?". 1 when it is a warning or
 * worse, 0 for NOTICE, INFO, LOG and DEBUG. */
int pgnotice_read (const PGresult *res, char *text, size_t textlen, const char **severity);
#endif
