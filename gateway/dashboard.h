/* dashboard.h - Dashboard -> Integrations for one workspace, and its API keys
 *
 * GET /dashboard/open?link=TOKEN&workspace=WS only shows a confirm page ("Open the dashboard of
 * WS"; a link without WS is refused: the page must name the workspace the button opens): link
 * scanners and mail or chat previews follow GETs and must not use the link up. Its
 * button POSTs the link to /dashboard/open, which spends it (operation dashboard_open) and sets
 * the session cookie (session.h); everything else needs that session, and every POST its CSRF
 * token. Buttons: Connect, Disconnect, Reconnect, Create API key, Revoke, Sign out (POST
 * /dashboard/logout: clears the session cookie in this browser). */
#ifndef FERRULE_DASHBOARD_H
#define FERRULE_DASHBOARD_H
#include "gateway.h"
void dashboard_open_confirm (gw_req_t *req, gw_resp_t *resp);
void dashboard_open (gw_req_t *req, gw_resp_t *resp);
void dashboard_home (gw_req_t *req, gw_resp_t *resp);
void dashboard_detail (gw_req_t *req, gw_resp_t *resp);
void dashboard_connect (gw_req_t *req, gw_resp_t *resp);
void dashboard_disconnect (gw_req_t *req, gw_resp_t *resp);
void dashboard_reconnect (gw_req_t *req, gw_resp_t *resp);
void dashboard_apikey_create (gw_req_t *req, gw_resp_t *resp);
void dashboard_apikey_revoke (gw_req_t *req, gw_resp_t *resp);
void dashboard_logout (gw_req_t *req, gw_resp_t *resp);
#endif
