/* api.h - the HTTP+JSON API for services (docs/openapi.yaml): the protocol's operations over
 * HTTP, the protocol's error bodies, HTTP statuses by error class */
#ifndef FERRULE_API_H
#define FERRULE_API_H
#include "gateway.h"
void api_token (gw_req_t *req, gw_resp_t *resp);
void api_reject (gw_req_t *req, gw_resp_t *resp);
void api_status (gw_req_t *req, gw_resp_t *resp);
void api_history (gw_req_t *req, gw_resp_t *resp);
void api_doctor (gw_req_t *req, gw_resp_t *resp);
void api_connect (gw_req_t *req, gw_resp_t *resp);
void api_disconnect (gw_req_t *req, gw_resp_t *resp);
#endif
