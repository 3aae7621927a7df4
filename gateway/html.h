/* html.h - a size-capped text builder that escapes what it is given, for pages and JSON
 *
 * Everything that came from outside (the provider's words, an integration id, a query value)
 * goes through html_text or html_attr, which escape & < > " ' so it can never become markup.
 * The builder is sticky: once an append fails (over HTML_MAX), every later append is a no-op
 * and html_failed says so; the caller checks once before sending. */
#ifndef FERRULE_HTML_H
#define FERRULE_HTML_H
#include <stddef.h>

#define HTML_MAX (512 * 1024)       /* one page */

typedef struct html html_t;

html_t *html_new (void);
void html_destroy (html_t **h_p);
/* Raw markup written by the gateway itself (never outside input). */
void html_raw (html_t *h, const char *s);
/* printf-style raw markup; the arguments must be markup or numbers, never outside text. */
void html_rawf (html_t *h, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
/* Text escaped for element content and for attribute values in double quotes. NULL: nothing. */
void html_text (html_t *h, const char *s);
/* A value percent-encoded for a URL query (unreserved characters kept). */
void html_urlenc (html_t *h, const char *s);
int html_failed (const html_t *h);
size_t html_len (const html_t *h);
const char *html_data (const html_t *h);
/* Hands the text over (NUL-terminated, caller frees with mem_free); the builder is emptied. */
char *html_take (html_t *h, size_t *len);

/* The page's start: doctype, lang, viewport, title, the stylesheet, and an <h1> with title. */
void html_page_begin (html_t *h, const char *title);
/* The same, moving on to refresh_url (a page of this gateway) at once: a navigation this page
 * starts, so the browser sends the SameSite=Strict session cookie along. */
void html_page_begin_refresh (html_t *h, const char *title, const char *refresh_url);
void html_page_end (html_t *h);
/* A POST form with one button and hidden fields (names and values in pairs, NULL-ended). */
void html_button_form (html_t *h, const char *action, const char *label, const char *css_class, ...)
    __attribute__ ((sentinel));
#endif
