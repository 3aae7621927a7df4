/* frames.h - receiving and sending whole ZeroMQ multipart messages with a cap on frame count */
#ifndef FERRULE_FRAMES_H
#define FERRULE_FRAMES_H
#include <stddef.h>
#include <zmq.h>

#define FRAMES_MAX 8

typedef struct {
    zmq_msg_t part [FRAMES_MAX];
    int count;          /* frames kept */
    int total;          /* frames received: more than FRAMES_MAX means the rest were discarded */
    size_t bytes;       /* payload of every frame received, discarded ones included */
} frames_t;

/* Receives one whole message (every part). 0 ok, -1 with errno (EAGAIN with ZMQ_DONTWAIT). */
int frames_recv (void *socket, frames_t *f, int flags);
/* The connection the message came from (ZMQ_SRCFD), -1 when unknown. Read only when asked: libzmq
 * looks it up by name in the message's properties and parses it from text, every time. */
int frames_source_fd (frames_t *f);
void frames_close (frames_t *f);
const void *frames_data (frames_t *f, int i);
size_t frames_size (frames_t *f, int i);
/* 1 when frame i holds exactly the NUL-terminated text s. */
int frames_is (frames_t *f, int i, const char *s);

/* Sends n parts as one message; 0 ok, -1 with errno (nothing was sent, or the rest was dropped). */
int frames_send (void *socket, const void *const *data, const size_t *size, int n, int flags);

/* Sends n parts, then last as the final part, as one message; last stays the caller's: what is sent
 * is a zmq_msg_copy of it, which shares the buffer (reference counted) instead of copying it when
 * it is over ZeroMQ's inline size. 0 ok, -1 with errno, as frames_send. */
int frames_send_msg (void *socket, const void *const *data, const size_t *size, int n, zmq_msg_t *last, int flags);

/* Big-endian integers in frames: the broker-worker protocol's sequence (8 bytes) and time left
 * (4 bytes). The one place either is encoded or decoded. */
#include <stdint.h>
void frames_put_u64 (unsigned char out [8], uint64_t v);
uint64_t frames_get_u64 (const unsigned char *in);
void frames_put_u32 (unsigned char out [4], uint32_t v);
uint32_t frames_get_u32 (const unsigned char *in);

/* Common socket options: no linger, bounded queues, frame size cap. */
void frames_socket_defaults (void *socket, int hwm, int max_msg_size);
/* The socket's ZMQ_FD, to poll as a plain descriptor once the socket has been read until a
 * receive found nothing (it signals arrivals from then on, docs/architecture.md); -1 on failure. */
int frames_socket_fd (void *socket);
/* Ends a context (zmq_ctx_term), its sockets closed: waits out their linger even when a signal
 * interrupts the wait (the handlers are installed without SA_RESTART), which otherwise left at once
 * and dropped the last answers queued. NULL: nothing. */
void frames_ctx_term (void *ctx);
#endif
