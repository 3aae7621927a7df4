/* style.c - the stylesheet: readable on a phone, contrast above WCAG AA, visible focus */
#include "style.h"
#include "mem.h"
#include <string.h>

static const char css [] =
    ":root{color-scheme:light;--ink:#1a1a1a;--muted:#4a4a4a;--line:#c8c8c8;--accent:#0b57d0;--bad:#a50e0e;"
    "--good:#146c2e;--warn:#7a4b00;}\n"
    "*{box-sizing:border-box}\n"
    "body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--ink);"
    "background:#fff}\n"
    "header{padding:.75rem 1rem;border-bottom:1px solid var(--line)}\n"
    ".brand{font-weight:700}\n"
    "main{max-width:60rem;margin:0 auto;padding:1rem}\n"
    "h1{font-size:1.5rem;margin:.5rem 0 1rem}\n"
    "h2{font-size:1.2rem;margin:1.5rem 0 .5rem}\n"
    "p,li{max-width:42rem}\n"
    "table{border-collapse:collapse;width:100%}\n"
    "th,td{text-align:left;padding:.5rem;border-bottom:1px solid var(--line);vertical-align:top}\n"
    "@media (max-width:40rem){table,thead,tbody,tr,th,td{display:block}thead{display:none}"
    "td{border:0;padding:.15rem 0}tr{border-bottom:1px solid var(--line);padding:.5rem 0}}\n"
    "button,.button{display:inline-block;font:inherit;padding:.45rem .9rem;border-radius:.3rem;"
    "border:1px solid var(--accent);background:var(--accent);color:#fff;text-decoration:none;cursor:pointer;"
    "margin:.15rem .25rem .15rem 0}\n"
    "button.secondary,.button.secondary{background:#fff;color:var(--accent)}\n"
    "button.danger{background:#fff;color:var(--bad);border-color:var(--bad)}\n"
    "button:focus-visible,a:focus-visible,input:focus-visible,select:focus-visible{outline:3px solid #f2a600;"
    "outline-offset:2px}\n"
    "a{color:var(--accent)}\n"
    "form.inline{display:inline}\n"
    "label{display:block;font-weight:600;margin:.5rem 0 .2rem}\n"
    "input,select{font:inherit;padding:.4rem;border:1px solid #767676;border-radius:.3rem;max-width:100%}\n"
    ".status-active{color:var(--good);font-weight:600}\n"
    ".status-needs_reconnect,.status-disconnected{color:var(--bad);font-weight:600}\n"
    ".notice{border-left:4px solid var(--accent);padding:.5rem 1rem;background:#eef3fd}\n"
    ".problem{border-left:4px solid var(--bad);padding:.5rem 1rem;background:#fdf0f0}\n"
    ".secret{font-family:ui-monospace,monospace;word-break:break-all;background:#f4f4f4;padding:.5rem}\n"
    ".ref{font-family:ui-monospace,monospace}\n"
    ".muted{color:var(--muted)}\n";

void
style_css (gw_req_t *req, gw_resp_t *resp)
{
    resp->status = 200;
    resp->type = "text/css; charset=utf-8";
    resp->body = mem_strdup (css);
    resp->len = strlen (css);
}
