/* frames.c - multipart helpers shared by broker, worker and client */
#include "frames.h"
#include <errno.h>
#include <string.h>

int
frames_recv (void *socket, frames_t *f, int flags)
{
    f->count = 0;
    f->total = 0;
    f->bytes = 0;
    int more = 1;
    while (more) {
        zmq_msg_t *m;
        zmq_msg_t scratch;
        m = f->count < FRAMES_MAX ? &f->part [f->count] : &scratch;
        zmq_msg_init (m);
        /* only the first part may fail with EAGAIN: the rest of a message arrives with it */
        if (zmq_msg_recv (m, socket, f->total == 0 ? flags : 0) < 0) {
            int e = errno;
            zmq_msg_close (m);
            frames_close (f);
            errno = e;
            return -1;
        }
        more = zmq_msg_more (m);
        f->bytes += zmq_msg_size (m);
        if (m == &scratch)
            zmq_msg_close (m);
        else
            f->count++;
        f->total++;
    }
    return 0;
}

int
frames_source_fd (frames_t *f)
{
    int fd = -1;
    for (int i = 0; fd < 0 && i < f->count; i++)
        fd = zmq_msg_get (&f->part [i], ZMQ_SRCFD);     /* a ROUTER's own routing-id part carries none */
    return fd;
}

void
frames_close (frames_t *f)
{
    for (int i = 0; i < f->count; i++)
        zmq_msg_close (&f->part [i]);
    f->count = 0;
}

const void *
frames_data (frames_t *f, int i)
{
    return i < f->count ? zmq_msg_data (&f->part [i]) : NULL;
}

size_t
frames_size (frames_t *f, int i)
{
    return i < f->count ? zmq_msg_size (&f->part [i]) : 0;
}

int
frames_is (frames_t *f, int i, const char *s)
{
    size_t n = strlen (s);
    return i < f->count && frames_size (f, i) == n && memcmp (frames_data (f, i), s, n) == 0;
}

int
frames_send (void *socket, const void *const *data, const size_t *size, int n, int flags)
{
    for (int i = 0; i < n; i++) {
        int fl = flags | (i < n - 1 ? ZMQ_SNDMORE : 0);
        if (zmq_send (socket, data [i], size [i], fl) < 0)
            return -1;
    }
    return 0;
}

int
frames_send_msg (void *socket, const void *const *data, const size_t *size, int n, zmq_msg_t *last, int flags)
{
    zmq_msg_t copy;
    if (frames_send (socket, data, size, n, flags | ZMQ_SNDMORE) != 0)
        return -1;
    zmq_msg_init (&copy);
    if (zmq_msg_copy (&copy, last) != 0 || zmq_msg_send (&copy, socket, flags) < 0) {
        int e = errno;
        zmq_msg_close (&copy);
        errno = e;
        return -1;
    }
    zmq_msg_close (&copy);          /* empty after a send: a no-op */
    return 0;
}

void
frames_socket_defaults (void *socket, int hwm, int max_msg_size)
{
    int zero = 0;
    int64_t maxsize = max_msg_size;
    zmq_setsockopt (socket, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (socket, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt (socket, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt (socket, ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize);
}

void
frames_ctx_term (void *ctx)
{
    if (!ctx)
        return;
    while (zmq_ctx_term (ctx) != 0 && errno == EINTR)
        ;                           /* restartable: the wait resumes where it was */
}

void
frames_put_u64 (unsigned char out [8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        out [i] = (unsigned char) (v >> (56 - 8 * i));
}

uint64_t
frames_get_u64 (const unsigned char *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | in [i];
    return v;
}

void
frames_put_u32 (unsigned char out [4], uint32_t v)
{
    for (int i = 0; i < 4; i++)
        out [i] = (unsigned char) (v >> (24 - 8 * i));
}

uint32_t
frames_get_u32 (const unsigned char *in)
{
    return ((uint32_t) in [0] << 24) | ((uint32_t) in [1] << 16) | ((uint32_t) in [2] << 8) | in [3];
}

int
frames_socket_fd (void *socket)
{
    int fd = -1;
    size_t len = sizeof fd;
    return zmq_getsockopt (socket, ZMQ_FD, &fd, &len) == 0 ? fd : -1;
}
