/* dbproxy.h - a TCP relay on 127.0.0.1 between the service and PostgreSQL, for tests that lose a
 * database connection at a chosen moment: it can stop passing the server's answers on (the client
 * then waits as for a server that stopped answering, while the server has done the work) and cut
 * every connection it relays. */
#ifndef FERRULE_DBPROXY_H
#define FERRULE_DBPROXY_H

typedef struct dbproxy dbproxy_t;

/* A relay to the server that conninfo (a libpq URL or keyword string) names, listening on a free
 * port of 127.0.0.1; NULL when it could not start. */
dbproxy_t *dbproxy_new (const char *conninfo);
void dbproxy_destroy (dbproxy_t **p_p);
/* conninfo as a keyword string whose host and port are the relay's (caller frees with free). */
char *dbproxy_conninfo (const dbproxy_t *p, const char *conninfo);
/* 1: the server's bytes stay unread in its sockets, from now on; 0: relayed again. The client's
 * bytes are always relayed. */
void dbproxy_hold_answers (dbproxy_t *p, int hold);
/* Closes every connection it relays, both sides, before it returns; new ones are relayed as
 * usual. How many it closed. */
int dbproxy_cut (dbproxy_t *p);
/* From now on, the first bytes a client sends that hold needle (within one read: a statement's
 * text) are not relayed: every connection is cut instead, once. */
void dbproxy_cut_on (dbproxy_t *p, const char *needle);
#endif
