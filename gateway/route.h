/* route.h - the gateway's HTTP server: the route table, caps, security headers */
#ifndef FERRULE_ROUTE_H
#define FERRULE_ROUTE_H
#include <stdio.h>
#include "gateway.h"

typedef struct route_server route_server_t;

/* Listens on gw->cfg.bind (thread per connection, capped; idle connections time out, so a
 * slow client holds one thread and nothing else). NULL with a reason in err. */
route_server_t *route_server_new (gw_t *gw, char *err, size_t errlen);
void route_server_destroy (route_server_t **s_p);
int route_server_port (const route_server_t *s);
/* SIGTERM: stops listening (new connections are refused) while the requests in flight go on;
 * their answers close their connections. */
void route_server_drain (route_server_t *s);
/* Requests whose headers arrived and whose answer is not yet sent. */
int route_server_in_flight (route_server_t *s);
/* Prints "METHOD PATH" per served route, one a line (--print-routes; compared with
 * docs/openapi.yaml by a test). */
void route_print (FILE *out);
#endif
