/* server.h - the HTTP side of the fake provider: libmicrohttpd, routing, size caps */
#ifndef FAKE_SERVER_H
#define FAKE_SERVER_H
#include "authz.h"

#define SERVER_BODY_MAX  (64 * 1024)   /* request bodies above this get 413 */

typedef struct server_t server_t;

/* Binds and listens on 127.0.0.1:port (0 picks a free port); requests are not
   served until server_start. authz is borrowed and must outlive the server.
   NULL on failure. */
server_t *server_new (authz_t *authz, unsigned short port);
/* The port actually bound. */
unsigned short server_port (const server_t *server);
/* Starts serving, one thread per connection. Returns 0, or -1 (logged). */
int server_start (server_t *server) __attribute__ ((warn_unused_result));
/* Stops accepting, waits for running requests, frees. */
void server_destroy (server_t **p);
#endif
