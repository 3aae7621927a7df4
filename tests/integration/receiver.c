/* receiver.c - the events tests' webhook receiver (receiver.h) */
#include "receiver.h"
#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct {
    pthread_mutex_t lock;
    pthread_cond_t released;        /* signalled by receiver_release */
    unsigned releases;              /* how many releases so far: a held request ends at the next */
    struct MHD_Daemon *d;
    char secret [256];
    int port;
    int fail_next;
    int delay_ms;
    int bad;
    receiver_got_t got [RECEIVER_MAX_GOT];
    int ngot;
} rx = { .lock = PTHREAD_MUTEX_INITIALIZER, .released = PTHREAD_COND_INITIALIZER };

typedef struct {
    char *body;
    size_t len;
} upload_t;

/* HMAC-SHA256 over "<t>.<body>", hex, compared in constant time; t within 5 minutes of now. */
static int
signature_ok (const char *header, const char *body, size_t len)
{
    long long t;
    char hex [80];
    int used = 0;
    if (!header || sscanf (header, "t=%lld,v1=%70[0-9a-f]%n", &t, hex, &used) != 2 || header [used] || strlen (hex) != 64)
        return 0;
    if (llabs ((long long) time (NULL) - t) > 300)
        return 0;
    char prefix [32];
    int plen = snprintf (prefix, sizeof prefix, "%lld.", t);
    unsigned char *msg = malloc ((size_t) plen + len);
    memcpy (msg, prefix, (size_t) plen);
    memcpy (msg + plen, body, len);
    unsigned char mac [32];
    unsigned int mac_len = 0;
    HMAC (EVP_sha256 (), rx.secret, (int) strlen (rx.secret), msg, (size_t) plen + len, mac, &mac_len);
    free (msg);
    char want [65];
    for (int i = 0; i < 32; i++)
        snprintf (want + 2 * i, 3, "%02x", mac [i]);
    return CRYPTO_memcmp (want, hex, 64) == 0;
}

static enum MHD_Result
on_request (void *cls, struct MHD_Connection *c, const char *url, const char *method, const char *version,
            const char *data, size_t *data_size, void **con_cls)
{
    upload_t *u = *con_cls;
    if (!u) {
        *con_cls = calloc (1, sizeof *u);
        return MHD_YES;
    }
    if (*data_size) {
        u->body = realloc (u->body, u->len + *data_size + 1);
        memcpy (u->body + u->len, data, *data_size);
        u->len += *data_size;
        u->body [u->len] = '\0';
        *data_size = 0;
        return MHD_YES;
    }
    const char *sig = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Ferrule-Signature");
    const char *hid = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Ferrule-Event-Id");
    pthread_mutex_lock (&rx.lock);
    int ok = u->body && signature_ok (sig, u->body, u->len);
    int delay = rx.delay_ms;
    unsigned releases = rx.releases;
    if (delay) {                    /* held, until the delay is over or the test releases it */
        struct timespec until;
        clock_gettime (CLOCK_REALTIME, &until);
        until.tv_sec += delay / 1000;
        until.tv_nsec += (long) (delay % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (rx.releases == releases && pthread_cond_timedwait (&rx.released, &rx.lock, &until) == 0)
            ;
    }
    pthread_mutex_unlock (&rx.lock);
    json_t *o = ok ? json_loadb (u->body, u->len, 0, NULL) : NULL;
    int status = 200;
    pthread_mutex_lock (&rx.lock);
    if (!o) {
        rx.bad++;
        status = 401;
    }
    else
    if (rx.fail_next > 0) {
        rx.fail_next--;
        status = 500;
    }
    if (o && rx.ngot < RECEIVER_MAX_GOT) {
        receiver_got_t *g = &rx.got [rx.ngot++];
        const char *id = json_string_value (json_object_get (o, "id"));
        const char *type = json_string_value (json_object_get (o, "type"));
        const char *integ = json_string_value (json_object_get (o, "integration"));
        snprintf (g->id, sizeof g->id, "%s", id ? id : "");
        snprintf (g->type, sizeof g->type, "%s", type ? type : "");
        snprintf (g->integration, sizeof g->integration, "%s", integ ? integ : "");
        g->status = status;
        if (!hid || strcmp (hid, g->id) != 0)
            rx.bad++;                /* the header must name the body's event */
    }
    pthread_mutex_unlock (&rx.lock);
    json_decref (o);
    struct MHD_Response *r = MHD_create_response_from_buffer (2, (void *) "ok", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response (c, (unsigned) status, r);
    MHD_destroy_response (r);
    return ret;
}

static void
on_done (void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    upload_t *u = *con_cls;
    if (u) {
        free (u->body);
        free (u);
    }
    *con_cls = NULL;
}

int
receiver_start (int port, const char *secret)
{
    snprintf (rx.secret, sizeof rx.secret, "%s", secret);
    rx.d = MHD_start_daemon (MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, (uint16_t) port, NULL, NULL,
                             on_request, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
                             MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, MHD_OPTION_END);
    if (!rx.d)
        return -1;
    rx.port = MHD_get_daemon_info (rx.d, MHD_DAEMON_INFO_BIND_PORT)->port;
    return 0;
}

void
receiver_stop (void)
{
    if (rx.d)
        MHD_stop_daemon (rx.d);
    rx.d = NULL;
}

int
receiver_port (void)
{
    return rx.port;
}

void
receiver_set (int fail_next, int delay_ms)
{
    pthread_mutex_lock (&rx.lock);
    rx.fail_next = fail_next;
    rx.delay_ms = delay_ms;
    pthread_mutex_unlock (&rx.lock);
}

void
receiver_release (void)
{
    pthread_mutex_lock (&rx.lock);
    rx.releases++;
    pthread_cond_broadcast (&rx.released);
    pthread_mutex_unlock (&rx.lock);
}

int
receiver_snapshot (receiver_got_t **got, int *bad)
{
    pthread_mutex_lock (&rx.lock);
    int n = rx.ngot;
    *got = malloc ((size_t) (n ? n : 1) * sizeof **got);
    memcpy (*got, rx.got, (size_t) n * sizeof **got);
    *bad = rx.bad;
    pthread_mutex_unlock (&rx.lock);
    return n;
}

int
receiver_count (int status, const char *type, const char *integration)
{
    receiver_got_t *got;
    int bad, n = receiver_snapshot (&got, &bad), count = 0;
    for (int i = 0; i < n; i++)
        if ((!status || got [i].status == status) && (!type || strcmp (got [i].type, type) == 0)
        &&  (!integration || strcmp (got [i].integration, integration) == 0))
            count++;
    free (got);
    return count;
}

int
receiver_hung_listen (int *fd)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    *fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*fd < 0 || bind (*fd, (struct sockaddr *) &a, sizeof a) != 0 || listen (*fd, 1024) != 0
    ||  getsockname (*fd, (struct sockaddr *) &a, &len) != 0)
        return -1;
    return ntohs (a.sin_port);
}
