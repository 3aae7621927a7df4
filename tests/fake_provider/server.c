/* server.c - libmicrohttpd glue: collects capped bodies, routes paths, renders replies */
#include "server.h"
#include "log.h"
#include "mem.h"
#include "provider.h"
#include "reqlog.h"
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SERVER_DISCARD_MAX  (16 * 1024 * 1024)   /* an oversized upload past this is cut off */
#define SERVER_PATH_MAX     256                  /* longer paths cannot match any route */

struct server_t {
    struct MHD_Daemon *daemon;
    int                fd;            /* listening socket until the daemon takes it, then -1 */
    authz_t           *authz;
    unsigned short     port;
};

/* Per-request state, created when the request line arrives. */
typedef struct {
    char     *raw_uri;            /* as received, with its query string */
    mem_buf_t body;
    bool      started;            /* headers seen, first access handler call done */
    bool      too_large;
    size_t    received;
} request_t;

static void *
on_uri (void *cls, const char *uri, struct MHD_Connection *connection)
{
    request_t *req = mem_alloc (sizeof *req);
    req->raw_uri = mem_strdup (uri ? uri : "");
    mem_buf_init (&req->body, SERVER_BODY_MAX);
    return req;
}

static void
on_completed (void *cls, struct MHD_Connection *connection, void **con_cls,
              enum MHD_RequestTerminationCode toe)
{
    request_t *req = *con_cls;
    if (!req)
        return;
    mem_free_secret (&req->raw_uri);      /* query strings carry codes and state */
    mem_buf_free (&req->body);            /* bodies carry tokens and secrets */
    mem_free (req);
    *con_cls = NULL;
}

/* Counts connections, so that a test can see whether a client reuses its connections. */
static void
on_connection (void *cls, struct MHD_Connection *connection, void **socket_context,
               enum MHD_ConnectionNotificationCode toe)
{
    server_t *server = cls;
    (void) connection;
    (void) socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        authz_count_connection (server->authz);
}

static void
on_mhd_log (void *cls, const char *fmt, va_list ap)
{
    char line [512];
    vsnprintf (line, sizeof line, fmt, ap);
    line [strcspn (line, "\n")] = '\0';
    /* Mostly clients hanging up or sending junk, which tests do on purpose. */
    log_debug (NULL, NULL, "http: %s", line);
}

/* Fills buf with part of a REPLY_HUGE_SIZE JSON document holding one enormous token. */
static ssize_t
huge_reader (void *cls, uint64_t pos, char *buf, size_t max)
{
    static const char head [] = "{\"access_token\":\"";
    static const char tail [] = "\",\"token_type\":\"Bearer\",\"expires_in\":3600}";
    const uint64_t tail_at = REPLY_HUGE_SIZE - (sizeof tail - 1);
    size_t n = 0;

    if (pos >= REPLY_HUGE_SIZE)
        return MHD_CONTENT_READER_END_OF_STREAM;
    for (; n < max && pos < REPLY_HUGE_SIZE; n++, pos++)
        buf [n] = pos < sizeof head - 1 ? head [pos] : pos >= tail_at ? tail [pos - tail_at] : 'a';
    return (ssize_t) n;
}

/* Queues reply on the connection and destroys it. */
static enum MHD_Result
send_reply (struct MHD_Connection *connection, const char *method, const char *url, reply_t *reply)
{
    struct MHD_Response *response = NULL;
    enum MHD_Result rc = MHD_NO;
    char seconds [32];

    if (reply->kind == REPLY_DROP) {
        log_debug (NULL, NULL, "%s \"%s\": dropped the connection as a fault", method, url);
        goto out;
    }
    if (reply->kind == REPLY_HUGE)
        response = MHD_create_response_from_callback (REPLY_HUGE_SIZE, 64 * 1024, huge_reader, NULL, NULL);
    else
        response = MHD_create_response_from_buffer (reply->body_len, reply->body ? reply->body : (char *) "",
                                                    MHD_RESPMEM_MUST_COPY);
    if (!response) {
        log_error (NULL, NULL, "could not build the answer to %s \"%s\"", method, url);
        goto out;
    }
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE, reply->content_type);
    MHD_add_response_header (response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header (response, MHD_HTTP_HEADER_PRAGMA, "no-cache");
    if (reply->location)
        MHD_add_response_header (response, MHD_HTTP_HEADER_LOCATION, reply->location);
    if (reply->www_authenticate)
        MHD_add_response_header (response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, reply->www_authenticate);
    if (reply->retry_after >= 0) {
        snprintf (seconds, sizeof seconds, "%ld", reply->retry_after);
        MHD_add_response_header (response, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
    }
    rc = MHD_queue_response (connection, reply->status, response);
    log_debug (NULL, NULL, "%s \"%s\": answered %u", method, url, reply->status);
out:
    if (response)
        MHD_destroy_response (response);
    reply_destroy (&reply);
    return rc;
}

static const char *
header (struct MHD_Connection *connection, const char *name)
{
    return MHD_lookup_connection_value (connection, MHD_HEADER_KIND, name);
}

/* The query string of the raw URI (without '?'), or "" */
static const char *
query_of (const request_t *req, size_t *len)
{
    const char *q = strchr (req->raw_uri, '?');
    q = q ? q + 1 : "";
    *len = strcspn (q, "#");
    return q;
}

static reply_t *
wrong_method (void)
{
    return reply_error (405, "method_not_allowed", "this endpoint does not take that method");
}

static reply_t *
not_found (void)
{
    return reply_error (404, "not_found", "no such endpoint");
}

/* The JSON body of an admin request, or NULL when empty or not JSON. */
static json_t *
json_body (const request_t *req)
{
    json_error_t error;
    if (req->body.len == 0)
        return NULL;
    return json_loadb (req->body.data, req->body.len, JSON_REJECT_DUPLICATES, &error);
}

static reply_t *
route_admin (server_t *server, const char *rest, const char *method, const request_t *req)
{
    size_t qlen;
    const char *query = query_of (req, &qlen);
    form_t *q = NULL;
    json_t *body = NULL;
    reply_t *reply = NULL;
    form_status_t status = form_parse (query, qlen, &q);

    if (status != FORM_OK) {
        reply = reply_error (400, "invalid_request", form_status_text (status));
        goto out;
    }
    if (strncmp (rest, "providers/", 10) == 0) {
        if (strcmp (method, "PUT") == 0) {
            body = json_body (req);
            reply = body ? authz_admin_put_provider (server->authz, rest + 10, body)
                         : reply_error (400, "invalid_request", "body must be a JSON object");
        }
        else if (strcmp (method, "GET") == 0)
            reply = authz_admin_get_provider (server->authz, rest + 10);
        else
            reply = wrong_method ();
    }
    else if (strcmp (rest, "grants") == 0 || strcmp (rest, "faults") == 0) {
        bool grants = rest [0] == 'g';
        if (strcmp (method, "POST") == 0) {
            body = json_body (req);
            if (!json_is_object (body))
                reply = reply_error (400, "invalid_request", "body must be a JSON object");
            else
                reply = grants ? authz_admin_grant (server->authz, body)
                               : authz_admin_add_fault (server->authz, body);
        }
        else if (!grants && strcmp (method, "DELETE") == 0)
            reply = authz_admin_clear_faults (server->authz, form_get (q, "provider"));
        else
            reply = wrong_method ();
    }
    else if (strcmp (rest, "stats") == 0)
        reply = strcmp (method, "GET") == 0 ? authz_admin_stats (server->authz) : wrong_method ();
    else if (strcmp (rest, "requests") == 0) {
        const char *limit_text = form_get (q, "limit");
        long limit = 50;
        if (limit_text) {
            char *end = NULL;
            errno = 0;
            limit = strtol (limit_text, &end, 10);
            if (errno || end == limit_text || *end || limit < 1 || limit > REQLOG_KEEP) {
                reply = reply_error (400, "invalid_request", "limit must be an integer from 1 to 1000");
                goto out;
            }
        }
        reply = strcmp (method, "GET") == 0
                    ? authz_admin_requests (server->authz, form_get (q, "provider"), (size_t) limit)
                    : wrong_method ();
    }
    else if (strcmp (rest, "reset") == 0)
        reply = strcmp (method, "POST") == 0 ? authz_admin_reset (server->authz) : wrong_method ();
    else if (strcmp (rest, "release") == 0)
        reply = strcmp (method, "POST") == 0 ? authz_admin_release (server->authz) : wrong_method ();
    else
        reply = not_found ();
out:
    json_decref (body);
    form_destroy (&q);
    return reply;
}

static reply_t *
route_provider (server_t *server, struct MHD_Connection *connection, const char *provider,
                const char *endpoint, const char *url, const char *method, const request_t *req)
{
    bool is_get = strcmp (method, "GET") == 0, is_post = strcmp (method, "POST") == 0;
    reply_t *(*handler) (authz_t *, const authz_request_t *) = NULL;
    authz_request_t areq = {
        .provider = provider,
        .path = url,
        .method = method,
        .content_type = header (connection, MHD_HTTP_HEADER_CONTENT_TYPE),
        .authorization = header (connection, MHD_HTTP_HEADER_AUTHORIZATION),
    };
    form_t *params = NULL;
    reply_t *reply;

    if (strcmp (endpoint, "token") == 0 && is_post)
        handler = authz_token;
    else if (strcmp (endpoint, "revoke") == 0 && is_post)
        handler = authz_revoke;
    else if (strcmp (endpoint, "authorize") == 0 && is_get)
        handler = authz_authorize;
    else if (strcmp (endpoint, "api/me") == 0 && is_get)
        handler = authz_resource_me;
    else if (strcmp (endpoint, "token") == 0 || strcmp (endpoint, "revoke") == 0
             || strcmp (endpoint, "authorize") == 0 || strcmp (endpoint, "api/me") == 0)
        return wrong_method ();
    else
        return not_found ();

    if (is_post)
        areq.params_status = form_parse (req->body.data ? req->body.data : "", req->body.len, &params);
    else {
        size_t qlen;
        const char *query = query_of (req, &qlen);
        areq.params_status = form_parse (query, qlen, &params);
    }
    areq.params = params;
    reply = handler (server->authz, &areq);
    form_destroy (&params);
    return reply;
}

static reply_t *
route (server_t *server, struct MHD_Connection *connection, const char *url, const char *method,
       const request_t *req)
{
    char provider [SERVER_PATH_MAX];
    const char *slash;

    if (!url || url [0] != '/' || strlen (url) >= SERVER_PATH_MAX)
        return not_found ();
    slash = strchr (url + 1, '/');
    if (!slash)
        return not_found ();
    snprintf (provider, sizeof provider, "%.*s", (int) (slash - url - 1), url + 1);
    if (strcmp (provider, "admin") == 0)
        return route_admin (server, slash + 1, method, req);
    if (!provider_name_valid (provider))
        return not_found ();
    return route_provider (server, connection, provider, slash + 1, url, method, req);
}

static enum MHD_Result
on_request (void *cls, struct MHD_Connection *connection, const char *url, const char *method,
            const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    server_t *server = cls;
    request_t *req = *con_cls;

    if (!req)
        *con_cls = req = on_uri (NULL, url, connection);   /* not expected: on_uri runs first */
    if (!req->started) {
        const char *length = header (connection, MHD_HTTP_HEADER_CONTENT_LENGTH);
        req->started = true;
        if (length) {
            char *end = NULL;
            errno = 0;
            unsigned long long declared = strtoull (length, &end, 10);
            if (errno || end == length || declared > SERVER_BODY_MAX)
                return send_reply (connection, method, url,
                                   reply_error (413, "invalid_request", "request body larger than 65536 bytes"));
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        req->received += *upload_data_size;
        if (!req->too_large && mem_buf_append (&req->body, upload_data, *upload_data_size) != 0)
            req->too_large = true;
        *upload_data_size = 0;
        return req->received > SERVER_DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    if (req->too_large)
        return send_reply (connection, method, url,
                           reply_error (413, "invalid_request", "request body larger than 65536 bytes"));
    return send_reply (connection, method, url, route (server, connection, url, method, req));
}

server_t *
server_new (authz_t *authz, unsigned short port)
{
    server_t *server = mem_alloc (sizeof *server);
    struct sockaddr_in addr;
    socklen_t addr_len = sizeof addr;
    int one = 1;

    server->authz = authz;
    server->fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (server->fd < 0) {
        log_error (NULL, NULL, "could not create the listening socket: %s", strerror (errno));
        goto fail;
    }
    setsockopt (server->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);   /* quick restarts */
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons (port);
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    if (bind (server->fd, (struct sockaddr *) &addr, sizeof addr) != 0 || listen (server->fd, 128) != 0) {
        log_error (NULL, NULL, "could not listen on 127.0.0.1:%u: %s", port, strerror (errno));
        goto fail;
    }
    if (getsockname (server->fd, (struct sockaddr *) &addr, &addr_len) != 0) {
        log_error (NULL, NULL, "could not learn which port the listener bound: %s", strerror (errno));
        goto fail;
    }
    server->port = ntohs (addr.sin_port);
    return server;
fail:
    server_destroy (&server);
    return NULL;
}

int
server_start (server_t *server)
{
    unsigned int flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;

    if (MHD_is_feature_supported (MHD_FEATURE_POLL) == MHD_YES)
        flags |= MHD_USE_POLL;                 /* no FD_SETSIZE ceiling */
    server->daemon = MHD_start_daemon (flags, 0, NULL, NULL, on_request, server,
                                       MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
                                       MHD_OPTION_LISTEN_SOCKET, server->fd,
                                       MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
                                       MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                       MHD_OPTION_NOTIFY_CONNECTION, on_connection, server,
                                       MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 60,
                                       MHD_OPTION_CONNECTION_LIMIT, (unsigned int) 1000,
                                       MHD_OPTION_END);
    if (!server->daemon) {
        log_error (NULL, NULL, "could not start the HTTP server on 127.0.0.1:%u", server->port);
        return -1;
    }
    server->fd = -1;                           /* the daemon owns and closes it now */
    return 0;
}

unsigned short
server_port (const server_t *server)
{
    return server->port;
}

void
server_destroy (server_t **p)
{
    if (!p || !*p)
        return;
    if ((*p)->daemon)
        MHD_stop_daemon ((*p)->daemon);
    if ((*p)->fd >= 0)
        close ((*p)->fd);
    mem_free (*p);
    *p = NULL;
}
