/* session.c - signed session cookies and CSRF tokens */
#include "session.h"
#include "crypto.h"
#include "ident.h"
#include "mem.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define MAX_COOKIE 512

static void
mac_hex (const gw_t *gw, const char *prefix, const char *text, char out [65])
{
    static const char hex [] = "0123456789abcdef";
    unsigned char md [32];
    unsigned int mdlen = 0;
    char buf [MAX_COOKIE + 16];
    snprintf (buf, sizeof buf, "%s%s", prefix, text);
    HMAC (EVP_sha256 (), gw->session_key, sizeof gw->session_key, (const unsigned char *) buf, strlen (buf), md, &mdlen);
    for (int i = 0; i < 32; i++) {
        out [2 * i] = hex [md [i] >> 4];
        out [2 * i + 1] = hex [md [i] & 15];
    }
    out [64] = '\0';
}

const char *
session_cookie_name (const gw_t *gw)
{
    return gw->secure ? SESSION_COOKIE_SECURE : SESSION_COOKIE;
}

char *
session_issue (const gw_t *gw, const char *workspace)
{
    unsigned char nonce [8];
    char payload [256], mac [65], nonce_hex [17];
    if (crypto_random (nonce, sizeof nonce) != 0)
        return NULL;
    for (int i = 0; i < 8; i++)
        snprintf (nonce_hex + 2 * i, 3, "%02x", nonce [i]);
    snprintf (payload, sizeof payload, "1|%" PRId64 "|%s|%s", (int64_t) time (NULL) + gw->cfg.session_ttl_s,
              workspace, nonce_hex);
    mac_hex (gw, "session|", payload, mac);
    size_t len = strlen (payload) + 200;
    char *cookie = mem_alloc (len);
    /* never a Domain: a "__Host-" cookie must not have one, and without it no other host gets it */
    snprintf (cookie, len, "%s=%s.%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%" PRId64 "%s",
              session_cookie_name (gw), payload, mac, gw->cfg.session_ttl_s, gw->secure ? "; Secure" : "");
    return cookie;
}

char *
session_clear (const gw_t *gw)
{
    size_t len = 160;
    char *cookie = mem_alloc (len);
    snprintf (cookie, len, "%s=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0%s", session_cookie_name (gw),
              gw->secure ? "; Secure" : "");
    return cookie;
}

int
session_check (const gw_req_t *req, char *workspace, size_t len)
{
    const char *v = gw_cookie (req, session_cookie_name (req->gw));
    char payload [MAX_COOKIE], mac [65];
    if (!v || strlen (v) >= MAX_COOKIE)
        return 0;
    const char *dot = strrchr (v, '.');
    if (!dot || strlen (dot + 1) != 64)
        return 0;
    memcpy (payload, v, (size_t) (dot - v));
    payload [dot - v] = '\0';
    mac_hex (req->gw, "session|", payload, mac);
    if (CRYPTO_memcmp (mac, dot + 1, 64) != 0)
        return 0;
    /* 1|EXPIRY|WORKSPACE|NONCE */
    char *save = NULL, *version = strtok_r (payload, "|", &save), *expiry = strtok_r (NULL, "|", &save);
    char *ws = strtok_r (NULL, "|", &save);
    if (!version || strcmp (version, "1") != 0 || !expiry || !ws || !ident_valid (ws, strlen (ws)))
        return 0;
    if (strtoll (expiry, NULL, 10) <= (long long) time (NULL) || strlen (ws) >= len)
        return 0;
    snprintf (workspace, len, "%s", ws);
    return 1;
}

void
session_csrf (const gw_req_t *req, char out [65])
{
    char ws [IDENT_MAX + 1];
    out [0] = '\0';
    if (session_check (req, ws, sizeof ws))
        mac_hex (req->gw, "csrf|", gw_cookie (req, session_cookie_name (req->gw)), out);
}

int
session_csrf_ok (const gw_req_t *req)
{
    char want [65], got [80];
    session_csrf (req, want);
    if (!want [0] || gw_form (req, "csrf", got, sizeof got) != 1 || strlen (got) != 64)
        return 0;
    return CRYPTO_memcmp (want, got, 64) == 0;
}
