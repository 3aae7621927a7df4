/* ident.c - integration id validation, shared by every process so all reject alike */
#include "ident.h"
#include <string.h>

static int
is_separator (char c)
{
    return c == '.' || c == '_' || c == ':' || c == '-';
}

int
ident_valid (const char *s, size_t len)
{
    if (!s || len == 0 || len > IDENT_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s [i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || is_separator (c)))
            return 0;
    }
    return 1;
}

int
ident_workspace_valid (const char *s, size_t len)
{
    return ident_valid (s, len) && is_separator (s [len - 1]);
}

int
ident_in_workspace (const char *id, const char *ws)
{
    if (!id || !ws)
        return 0;
    size_t wlen = strnlen (ws, IDENT_MAX + 1);
    return ident_workspace_valid (ws, wlen) && strncmp (id, ws, wlen) == 0;
}

size_t
ident_home_workspace_len (const char *id)
{
    size_t len = id ? strnlen (id, IDENT_MAX + 1) : 0;
    if (!ident_valid (id, len))
        return 0;
    const char *colon = memchr (id, ':', len);
    if (colon)
        return (size_t) (colon - id) + 1;
    for (size_t i = 0; i < len; i++)
        if (is_separator (id [i]))
            return i + 1;
    return 0;
}
