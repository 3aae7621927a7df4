/* dburl.c - the forms of a database URL setting (see dburl.h) */
#include "dburl.h"
#include <string.h>

dburl_kind_t
dburl_kind (const char *url)
{
    if (strncmp (url, "postgresql://", 13) == 0 || strncmp (url, "postgres://", 11) == 0)
        return DBURL_URI;
    if (strchr (url, '='))
        return DBURL_CONNINFO;
    /* a name with none of a URI's marks: "user:pw@host" and "scheme://" are not names */
    if (*url && !strpbrk (url, "@:/"))
        return DBURL_NAME;
    return DBURL_UNREADABLE;
}
