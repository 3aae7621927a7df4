/* itest.c - shared helpers for the integration tests */
#define _GNU_SOURCE
#include "itest.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *
itest_grant (harness_t *h, const char *provider, const char *scopes_json)
{
    json_error_t jerr;
    json_t *scopes = json_loads (scopes_json ? scopes_json : "[]", 0, &jerr);
    json_t *body = json_pack ("{s:s, s:o}", "provider", provider, "scopes", scopes);
    json_t *g = harness_fake (h, "POST", "/admin/grants", body);
    json_decref (body);
    const char *rt = g ? json_string_value (json_object_get (g, "refresh_token")) : NULL;
    char *out = rt ? strdup (rt) : NULL;
    json_decref (g);
    return out;
}

int
itest_import (harness_t *h, const char *id, const char *provider, const char *refresh_token)
{
    int rc = -1;
    json_t *r = harness_ctl (h, &rc, "import", "--integration", id, "--provider", provider,
                             "--refresh-token", refresh_token, NULL);
    json_decref (r);
    return rc;
}

void
itest_expire (harness_t *h, const char *id)
{
    char sql [512];
    snprintf (sql, sizeof sql,
              "WITH u AS (UPDATE integrations SET access_expires_at = now() - interval '1 second'"
              " WHERE id = '%s' RETURNING id) SELECT pg_notify('ferrule_integrations', 'test ' || id) FROM u", id);
    harness_sql (h, sql);
}

long long
itest_stat (harness_t *h, const char *provider, const char *counter)
{
    json_t *s = harness_fake (h, "GET", "/admin/stats", NULL);
    json_t *p = json_object_get (json_object_get (s, "providers"), provider);
    long long v = p ? (long long) json_integer_value (json_object_get (p, counter)) : 0;
    json_decref (s);
    return v;
}

void
itest_fault (harness_t *h, const char *provider, const char *kind, int count, int status, int retry_after,
             int delay_ms)
{
    json_t *f = json_pack ("{s:s, s:s, s:i}", "provider", provider, "kind", kind, "count", count);
    if (status >= 0)
        json_object_set_new (f, "status", json_integer (status));
    if (retry_after >= 0)
        json_object_set_new (f, "retry_after", json_integer (retry_after));
    if (delay_ms >= 0)
        json_object_set_new (f, "delay_ms", json_integer (delay_ms));
    json_decref (harness_fake (h, "POST", "/admin/faults", f));
    json_decref (f);
}

const char *
itest_code (const json_t *reply)
{
    const char *c = json_string_value (json_object_get (json_object_get (reply, "error"), "code"));
    return c ? c : "";
}

static int
file_contains (const char *path, const char *needle)
{
    FILE *f = fopen (path, "rb");
    if (!f)
        return 0;
    size_t cap = 1 << 20, len = 0, n;
    char *buf = malloc (cap + 1);
    int found = 0;
    while ((n = fread (buf + len, 1, cap - len, f)) > 0) {
        len += n;
        buf [len] = '\0';
        if (memmem (buf, len, needle, strlen (needle))) {
            found = 1;
            break;
        }
        if (len == cap) {       /* keep the tail so a match across chunks is seen */
            size_t keep = strlen (needle);
            memmove (buf, buf + len - keep, keep);
            len = keep;
        }
    }
    free (buf);
    fclose (f);
    return found;
}

int
itest_workdir_contains (harness_t *h, const char *needle)
{
    DIR *d = opendir (harness_workdir (h));
    if (!d)
        return 0;
    struct dirent *de;
    int found = 0;
    while (!found && (de = readdir (d))) {
        size_t n = strlen (de->d_name);
        if (de->d_name [0] == '.' || n < 4 || strcmp (de->d_name + n - 4, ".log") != 0)
            continue;          /* logs only: providers.json holds the test client secret on purpose */
        char path [4096];
        snprintf (path, sizeof path, "%s/%s", harness_workdir (h), de->d_name);
        found = file_contains (path, needle);
    }
    closedir (d);
    return found;
}
