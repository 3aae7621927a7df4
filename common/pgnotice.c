/* pgnotice.c - a server notice's severity and message, ready to quote */
#include "pgnotice.h"
#include "text.h"
#include <string.h>

int
pgnotice_read (const PGresult *res, char *text, size_t textlen, const char **severity)
{
    const char *sev = PQresultErrorField (res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY);
    text_printable (text, textlen, msg ? msg : "(no message)", (size_t) -1, PGNOTICE_MAX);
    if (severity)
        *severity = sev ? sev : "?";
    return sev && strcmp (sev, "NOTICE") != 0 && strcmp (sev, "INFO") != 0 && strcmp (sev, "LOG") != 0
           && strncmp (sev, "DEBUG", 5) != 0;
}
