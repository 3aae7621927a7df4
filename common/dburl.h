/* dburl.h - what a database URL setting (FERRULE_DATABASE_URL, --database-url) may hold
 *
 * libpq takes a string that is neither a URI of its own schemes nor a key=value string for a
 * database name: "postgresql+psycopg2://owner:pw@host/db", or "owner:pw@host/db" with its scheme
 * left off, goes to the server as a name, and its "database ... does not exist" carries the
 * password into a log line. Such a string is refused before it is used, and never shown. */
#ifndef FERRULE_DBURL_H
#define FERRULE_DBURL_H

typedef enum {
    DBURL_URI,              /* postgresql:// or postgres:// */
    DBURL_CONNINFO,         /* key=value pairs */
    DBURL_NAME,             /* a bare database name: no '@', ':' or '/' */
    DBURL_UNREADABLE        /* none of these: may hold a password, so it is not shown */
} dburl_kind_t;

dburl_kind_t dburl_kind (const char *url);
/* What an unreadable one is told, without its value. */
#define DBURL_UNREADABLE_TEXT "is neither a \"postgresql://\" URI, nor a \"key=value\" connection string, nor a " \
                              "database name (it is not shown: it may hold a password)"
#endif
