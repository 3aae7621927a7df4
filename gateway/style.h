/* style.h - the one stylesheet of every page */
#ifndef FERRULE_STYLE_H
#define FERRULE_STYLE_H
#include "gateway.h"
/* GET /static/ferrule.css */
void style_css (gw_req_t *req, gw_resp_t *resp);
#endif
