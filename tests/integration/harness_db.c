/* harness_db.c - the harness's database: one fresh database per harness, migrated, with the workers' runtime role; SQL helpers for tests; names, URLs, ports */
#include "harness_private.h"

/* --- small helpers --------------------------------------------------------------------------- */

/* Lower-case letters, digits and "_" only, at most max characters. */
char *
hx_sanitize_name (const char *name, size_t max)
{
    size_t len = strlen (name);
    if (len > max)
        len = max;
    char *s = mem_alloc (len + 1);
    for (size_t i = 0; i < len; i++) {
        char c = name [i];
        if (c >= 'A' && c <= 'Z')
            c = (char) (c - 'A' + 'a');
        s [i] = ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) ? c : '_';
    }
    if (len == 0) {
        mem_free (s);
        s = mem_strdup ("test");
    }
    return s;
}

/* The admin URL with its database replaced by dbname. */
char *
hx_url_with_database (const char *url, const char *dbname)
{
    const char *scheme = strstr (url, "://");
    if (!scheme)
        return hx_strfmt ("%s dbname=%s", url, dbname);   /* key=value connection string */
    const char *authority = scheme + 3;
    const char *slash = strchr (authority, '/');
    const char *query = strchr (authority, '?');
    if (slash && (!query || slash < query))
        return hx_strfmt ("%.*s/%s%s", (int) (slash - url), url, dbname, query ? query : "");
    if (query)
        return hx_strfmt ("%.*s/%s%s", (int) (query - url), url, dbname, query);
    return hx_strfmt ("%s/%s", url, dbname);
}

/* url, connecting as user with password instead (a URI gets ?user=&password=, which libpq lets
   win over the user and password parts). Neither may need quoting or percent-encoding. */
char *
hx_url_with_login (const char *url, const char *user, const char *password)
{
    if (!strstr (url, "://"))
        return hx_strfmt ("%s user=%s password=%s", url, user, password);
    return hx_strfmt ("%s%suser=%s&password=%s", url, strchr (url, '?') ? "&" : "?", user, password);
}

char *
hx_base64_encode (const unsigned char *data, size_t len)
{
    static const char alphabet [] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = mem_alloc ((len + 2) / 3 * 4 + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned) data [i] << 16;
        if (i + 1 < len)
            v |= (unsigned) data [i + 1] << 8;
        if (i + 2 < len)
            v |= data [i + 2];
        out [o++] = alphabet [(v >> 18) & 63];
        out [o++] = alphabet [(v >> 12) & 63];
        out [o++] = i + 1 < len ? alphabet [(v >> 6) & 63] : '=';
        out [o++] = i + 2 < len ? alphabet [v & 63] : '=';
    }
    out [o] = '\0';
    return out;
}

int
hx_random_bytes (unsigned char *buf, size_t len)
{
    int fd = open ("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -1;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read (fd, buf + got, len - got);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t) n;
    }
    close (fd);
    return got == len ? 0 : -1;
}

/* A port on 127.0.0.1 that nothing listens on right now (the kernel's pick for port 0). The
   sockets stay open until all ports are chosen, so the ports differ. */
int
hx_free_ports (int *ports, int count)
{
    int fds [4] = { -1, -1, -1, -1 };
    int rc = 0;
    for (int i = 0; i < count && i < 4; i++) {
        struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = 0 };
        socklen_t alen = sizeof addr;
        addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
        fds [i] = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds [i] == -1
            || bind (fds [i], (struct sockaddr *) &addr, sizeof addr) == -1
            || getsockname (fds [i], (struct sockaddr *) &addr, &alen) == -1) {
            hx_say ("could not find a free port on 127.0.0.1: %s", strerror (errno));
            rc = -1;
            break;
        }
        ports [i] = ntohs (addr.sin_port);
    }
    for (int i = 0; i < 4; i++)
        if (fds [i] != -1)
            close (fds [i]);
    return rc;
}

/* NOTICEs such as "database does not exist, skipping" are noise in a test's output. */
static void
ignore_notice (void *arg, const char *message)
{
    (void) arg;
    (void) message;
}

static PGconn *
admin_connect (harness_t *self)
{
    PGconn *conn = PQconnectdb (self->admin_url);
    if (PQstatus (conn) != CONNECTION_OK) {
        hx_say ("could not connect to the test cluster at \"%s\": %s", self->admin_url,
             PQerrorMessage (conn));
        PQfinish (conn);
        return NULL;
    }
    PQsetNoticeProcessor (conn, ignore_notice, NULL);
    return conn;
}

/* 0 when res (cleared here) is a success; says the statement and why otherwise. */
static int
sql_result (PGresult *res, const char *sql)
{
    int rc = 0;
    if (PQresultStatus (res) != PGRES_COMMAND_OK && PQresultStatus (res) != PGRES_TUPLES_OK) {
        hx_say ("SQL failed: %s: %s", sql, PQresultErrorMessage (res));
        rc = -1;
    }
    PQclear (res);
    return rc;
}

static int
exec_sql (PGconn *conn, const char *sql)
{
    return sql_result (PQexec (conn, sql), sql);
}

/* Drops the test databases of harness processes that no longer exist (a test killed by a
   timeout cannot drop its own), so the cluster does not fill up over many runs. */
static void
drop_stale_databases (PGconn *admin)
{
    PGresult *res = PQexec (admin,
        "SELECT datname, shobj_description (oid, 'pg_database') FROM pg_database "
        "WHERE datname LIKE 'ft\\_%'");
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        PQclear (res);
        return;
    }
    for (int i = 0; i < PQntuples (res); i++) {
        const char *comment = PQgetvalue (res, i, 1);
        size_t plen = strlen (DB_COMMENT_PREFIX);
        if (PQgetisnull (res, i, 1) || strncmp (comment, DB_COMMENT_PREFIX, plen) != 0)
            continue;
        char *end;
        long pid = strtol (comment + plen, &end, 10);
        if (end == comment + plen || pid <= 0)
            continue;
        if (kill ((pid_t) pid, 0) == 0 || errno != ESRCH)
            continue;
        char *quoted = PQescapeIdentifier (admin, PQgetvalue (res, i, 0), strlen (PQgetvalue (res, i, 0)));
        if (quoted) {
            char *sql = hx_strfmt ("DROP DATABASE IF EXISTS %s WITH (FORCE)", quoted);
            if (exec_sql (admin, sql) == 0)
                hx_say ("dropped %s, left by a test process that no longer runs", quoted);
            mem_free (sql);
            PQfreemem (quoted);
        }
    }
    PQclear (res);
}

/* Drops the runtime roles of harness processes that no longer exist (roles are cluster-wide). */
static void
drop_stale_roles (PGconn *admin)
{
    PGresult *res = PQexec (admin, "SELECT rolname FROM pg_roles WHERE rolname LIKE 'frrt\\_%'");
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        PQclear (res);
        return;
    }
    for (int i = 0; i < PQntuples (res); i++) {
        const char *name = PQgetvalue (res, i, 0);
        long pid = strtol (name + strlen (RUNTIME_ROLE_PREFIX), NULL, 10);
        if (pid <= 0 || kill ((pid_t) pid, 0) == 0 || errno != ESRCH)
            continue;
        char *quoted = PQescapeIdentifier (admin, name, strlen (name));
        if (quoted) {
            char *sql = hx_strfmt ("DROP ROLE IF EXISTS %s", quoted);
            PGresult *r = PQexec (admin, sql);     /* fails while a database still grants it: later */
            PQclear (r);
            mem_free (sql);
            PQfreemem (quoted);
        }
    }
    PQclear (res);
}

int
hx_create_database (harness_t *self)
{
    PGconn *admin = admin_connect (self);
    if (!admin)
        return -1;
    drop_stale_databases (admin);
    drop_stale_roles (admin);
    int rc = -1;
    char *sql = NULL;
    char *quoted = PQescapeIdentifier (admin, self->dbname, strlen (self->dbname));
    if (!quoted)
        goto out;
    sql = hx_strfmt ("DROP DATABASE IF EXISTS %s WITH (FORCE)", quoted);
    if (exec_sql (admin, sql) != 0)
        goto out;
    mem_free (sql);
    sql = hx_strfmt ("CREATE DATABASE %s", quoted);
    if (exec_sql (admin, sql) != 0)
        goto out;
    mem_free (sql);
    sql = hx_strfmt ("COMMENT ON DATABASE %s IS '" DB_COMMENT_PREFIX "%ld'", quoted, (long) getpid ());
    if (exec_sql (admin, sql) != 0)
        goto out;
    rc = 0;
out:
    mem_free (sql);
    if (quoted)
        PQfreemem (quoted);
    PQfinish (admin);
    return rc;
}

void
hx_drop_database (harness_t *self)
{
    if (!self->dbname)
        return;
    PGconn *admin = admin_connect (self);
    if (!admin)
        return;
    char *quoted = PQescapeIdentifier (admin, self->dbname, strlen (self->dbname));
    if (quoted) {
        char *sql = hx_strfmt ("DROP DATABASE IF EXISTS %s WITH (FORCE)", quoted);
        (void) exec_sql (admin, sql);
        mem_free (sql);
        PQfreemem (quoted);
    }
    quoted = self->runtime_role ? PQescapeIdentifier (admin, self->runtime_role, strlen (self->runtime_role)) : NULL;
    if (quoted) {
        char *sql = hx_strfmt ("DROP ROLE IF EXISTS %s", quoted);
        (void) exec_sql (admin, sql);
        mem_free (sql);
        PQfreemem (quoted);
    }
    PQfinish (admin);
}

/* Gives the runtime role its password (after "ferrule-migrate grant-runtime" created it without
   one), so that the workers can log in over TCP. */
int
hx_set_runtime_password (harness_t *self)
{
    PGconn *admin = admin_connect (self);
    if (!admin)
        return -1;
    int rc = -1;
    char *sql = NULL;
    char *role = PQescapeIdentifier (admin, self->runtime_role, strlen (self->runtime_role));
    char *password = PQescapeLiteral (admin, self->runtime_password, strlen (self->runtime_password));
    if (!role || !password)
        goto out;
    sql = hx_strfmt ("ALTER ROLE %s PASSWORD %s", role, password);
    PGresult *res = PQexec (admin, sql);
    if (PQresultStatus (res) != PGRES_COMMAND_OK)
        hx_say ("could not set the password of role %s: %s", role, PQresultErrorMessage (res));
    else
        rc = 0;
    PQclear (res);
out:
    mem_free_secret (&sql);
    if (role)
        PQfreemem (role);
    if (password)
        PQfreemem (password);
    PQfinish (admin);
    return rc;
}

bool
hx_need_binary (const char *path, const char *target)
{
    if (!path) {
        hx_say ("%s was not built: its CMake target did not exist when the tree was configured", target);
        return false;
    }
    if (access (path, X_OK) != 0) {
        hx_say ("%s is missing at \"%s\": build the tree first", target, path);
        return false;
    }
    return true;
}

/* --- the database ---------------------------------------------------------------------------- */

PGconn *
harness_db (harness_t *self)
{
    if (self->db && PQstatus (self->db) == CONNECTION_OK)
        return self->db;
    if (self->db)
        PQfinish (self->db);
    self->db = PQconnectdb (self->database_url);
    if (PQstatus (self->db) != CONNECTION_OK) {
        hx_say ("could not connect to the test database \"%s\": %s", self->dbname,
             PQerrorMessage (self->db));
        PQfinish (self->db);
        self->db = NULL;
        return NULL;
    }
    PQsetNoticeProcessor (self->db, ignore_notice, NULL);
    return self->db;
}

/* Runs sql on harness_db, reconnecting once if the server went away since the last query (a
   test that stops and starts PostgreSQL). NULL only when there is no connection. */
static PGresult *
db_query (harness_t *self, const char *sql)
{
    PGconn *db = harness_db (self);
    if (!db)
        return NULL;
    PGresult *res = PQexec (db, sql);
    if (PQstatus (db) == CONNECTION_BAD) {
        PQclear (res);
        PQreset (db);
        if (PQstatus (db) != CONNECTION_OK) {
            hx_say ("could not reconnect to the test database \"%s\": %s", self->dbname, PQerrorMessage (db));
            return NULL;
        }
        res = PQexec (db, sql);
    }
    return res;
}

int
harness_sql (harness_t *self, const char *sql)
{
    PGresult *res = db_query (self, sql);
    return res ? sql_result (res, sql) : -1;
}

int
harness_sql_before_constraint (harness_t *self, const char *table, const char *constraint, const char *sql)
{
    /* one DO block: a failure anywhere leaves the table as it was */
    static const char *const fmt =
        "DO $harness$ DECLARE def text; BEGIN"
        " SELECT pg_get_constraintdef (oid) INTO STRICT def FROM pg_constraint"
        "  WHERE conrelid = '%s'::regclass AND conname = '%s';"
        " ALTER TABLE %s DROP CONSTRAINT %s;"
        " %s;"
        " EXECUTE format ('ALTER TABLE %%I ADD CONSTRAINT %%I %%s', '%s', '%s', def);"  /* keeps NOT VALID */
        " END $harness$";
    int len = snprintf (NULL, 0, fmt, table, constraint, table, constraint, sql, table, constraint);
    char *block = mem_alloc ((size_t) len + 1);
    snprintf (block, (size_t) len + 1, fmt, table, constraint, table, constraint, sql, table, constraint);
    int rc = harness_sql (self, block);
    mem_free (block);
    return rc;
}

long long
harness_sql_int (harness_t *self, const char *sql)
{
    PGresult *res = db_query (self, sql);
    if (!res)
        return -1;
    long long value = -1;
    if (PQresultStatus (res) != PGRES_TUPLES_OK)
        hx_say ("SQL failed: %s: %s", sql, PQresultErrorMessage (res));
    else if (PQntuples (res) != 1 || PQnfields (res) != 1 || PQgetisnull (res, 0, 0))
        hx_say ("SQL did not return one non-null value: %s", sql);
    else {
        char *end;
        value = strtoll (PQgetvalue (res, 0, 0), &end, 10);
        if (*end) {
            hx_say ("SQL returned \"%s\", not an integer: %s", PQgetvalue (res, 0, 0), sql);
            value = -1;
        }
    }
    PQclear (res);
    return value;
}
