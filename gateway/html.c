/* html.c - escaping text builder and the page frame */
#include "html.h"
#include "mem.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct html {
    mem_buf_t buf;
    int failed;
};

html_t *
html_new (void)
{
    html_t *h = mem_alloc (sizeof *h);
    mem_buf_init (&h->buf, HTML_MAX);
    return h;
}

void
html_destroy (html_t **h_p)
{
    if (h_p && *h_p) {
        mem_buf_free (&(*h_p)->buf);
        mem_free (*h_p);
        *h_p = NULL;
    }
}

static void
put (html_t *h, const char *s, size_t len)
{
    if (!h->failed && mem_buf_append (&h->buf, s, len) != 0)
        h->failed = 1;
}

void
html_raw (html_t *h, const char *s)
{
    if (s)
        put (h, s, strlen (s));
}

void
html_rawf (html_t *h, const char *fmt, ...)
{
    char small [1024];
    va_list ap;
    va_start (ap, fmt);
    int n = vsnprintf (small, sizeof small, fmt, ap);
    va_end (ap);
    if (n < 0 || (size_t) n >= sizeof small)
        h->failed = 1;              /* the gateway's own markup is short; longer is a bug */
    else
        put (h, small, (size_t) n);
}

void
html_text (html_t *h, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
            case '&':  put (h, "&amp;", 5); break;
            case '<':  put (h, "&lt;", 4); break;
            case '>':  put (h, "&gt;", 4); break;
            case '"':  put (h, "&quot;", 6); break;
            case '\'': put (h, "&#39;", 5); break;
            default:   put (h, s, 1); break;
        }
    }
}

void
html_urlenc (html_t *h, const char *s)
{
    static const char hex [] = "0123456789ABCDEF";
    for (; s && *s; s++) {
        unsigned char c = (unsigned char) *s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.'
        ||  c == '_' || c == '~')
            put (h, s, 1);
        else {
            char e [3] = { '%', hex [c >> 4], hex [c & 15] };
            put (h, e, 3);
        }
    }
}

int
html_failed (const html_t *h)
{
    return h->failed;
}

size_t
html_len (const html_t *h)
{
    return h->buf.len;
}

const char *
html_data (const html_t *h)
{
    return h->buf.data ? h->buf.data : "";
}

char *
html_take (html_t *h, size_t *len)
{
    char *out = h->buf.data ? h->buf.data : mem_strdup ("");
    if (len)
        *len = h->buf.len;
    h->buf.data = NULL;
    h->buf.len = h->buf.cap = 0;
    return out;
}

void
html_page_begin (html_t *h, const char *title)
{
    html_page_begin_refresh (h, title, NULL);
}

void
html_page_begin_refresh (html_t *h, const char *title, const char *refresh_url)
{
    html_raw (h, "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                 "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                 "<meta name=\"referrer\" content=\"strict-origin\">\n");
    if (refresh_url) {
        html_raw (h, "<meta http-equiv=\"refresh\" content=\"0;url=");
        html_text (h, refresh_url);
        html_raw (h, "\">\n");
    }
    html_raw (h, "<title>");
    html_text (h, title);
    html_raw (h, " - Ferrule</title>\n<link rel=\"stylesheet\" href=\"/static/ferrule.css\">\n</head>\n<body>\n"
                 "<header><span class=\"brand\">Ferrule</span></header>\n<main>\n<h1>");
    html_text (h, title);
    html_raw (h, "</h1>\n");
}

void
html_page_end (html_t *h)
{
    html_raw (h, "</main>\n</body>\n</html>\n");
}

void
html_button_form (html_t *h, const char *action, const char *label, const char *css_class, ...)
{
    va_list ap;
    html_raw (h, "<form method=\"post\" action=\"");
    html_text (h, action);
    html_raw (h, "\" class=\"inline\">");
    va_start (ap, css_class);
    for (const char *name = va_arg (ap, const char *); name; name = va_arg (ap, const char *)) {
        const char *value = va_arg (ap, const char *);
        html_raw (h, "<input type=\"hidden\" name=\"");
        html_text (h, name);
        html_raw (h, "\" value=\"");
        html_text (h, value);
        html_raw (h, "\">");
    }
    va_end (ap);
    html_raw (h, "<button type=\"submit\" class=\"");
    html_text (h, css_class ? css_class : "");
    html_raw (h, "\">");
    html_text (h, label);
    html_raw (h, "</button></form>\n");
}
