/* ident.c - integration id validation, shared by every process so all reject alike */
#include "ident.h"

int
ident_valid (const char *s, size_t len)
{
    if (!s || len == 0 || len > IDENT_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s [i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
        ||    c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}
