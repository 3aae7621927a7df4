/* guard.h - byte budgets per connection, so a hostile peer is cut off before memory grows
 *
 * libzmq counts only complete messages against the high-water mark, and shows the application
 * nothing of a multipart message until its last frame: a peer that sends a never-ending
 * multipart message makes the socket buffer it without limit, out of the application's sight.
 * The guard watches every TCP connection of one socket (a socket monitor gives their fds): what
 * the kernel says the peer sent (TCP_INFO bytes received, less what still waits in the kernel)
 * against what reached the application in complete messages (counted by guard_account from each
 * message's ZMQ_SRCFD), plus an allowance for framing; what of the allowance the wire shows
 * unused is forgotten whenever it is measured, so that no peer can bank it over many messages
 * and spend it on one that never ends. A connection holding more than its budget
 * in the socket is shut down (shutdown(2) on its fd; libzmq then drops the connection and what
 * it buffered). Connections over other transports (ipc://) are not measured. */
#ifndef FERRULE_GUARD_H
#define FERRULE_GUARD_H
#include <stddef.h>
#include <stdint.h>

typedef struct guard guard_t;

/* Monitors socket (before it binds) through an inproc PAIR named after name. budget: bytes a
 * connection may hold in the socket while the application has read every complete message;
 * hard_budget: bytes it may hold at any time. NULL with a reason. */
guard_t *guard_new (void *ctx, void *socket, const char *name, size_t budget, size_t hard_budget,
                    char *err, size_t errlen);
void guard_destroy (guard_t **g_p);
/* The monitor socket's ZMQ_FD, to poll as a plain descriptor: it turns readable when events may
 * have arrived since guard_events last found none; then call guard_events, which reads them all
 * (at most 1024 a call: call it now and then regardless, for what a full call left behind). */
int guard_fd (const guard_t *g);
void guard_events (guard_t *g);
/* One complete message from fd was received: bytes of payload in frames frames. Returns the
 * connection's number as far as the events read so far tell (guard_connection without reading
 * more: 0, or a closed predecessor's, while its ACCEPTED event is unread), for guard_sent. */
uint64_t guard_account (guard_t *g, int fd, size_t bytes, int frames);
/* Answers sent and not read are bounded for the whole socket: libzmq queues up to the high-water
 * mark of messages for each peer, so peers that never read would each hold that many. Over total
 * bytes (of payload still in libzmq, measured by guard_check from what the kernel took of each
 * connection), the connection holding the most is cut; why (the setting's name) goes to the log.
 * 0: unbounded. */
void guard_limit_unsent (guard_t *g, size_t total, const char *why);
/* Unfinished messages are bounded for the whole socket too: each connection's budget bounds one
 * connection, and a peer may open many. While all connections together hold more than total
 * bytes of no complete message (eight times total while the application has complete messages
 * unread, which count as held until read), guard_check cuts the connections holding the most
 * until the rest are under it; why (the setting's name) goes to the log. 0: unbounded. */
void guard_limit_unfinished (guard_t *g, size_t total, const char *why);
/* A message of bytes (payload, all frames) was sent to the connection numbered conn (as
 * guard_account returned) on fd. Counted only while fd is still that connection. */
void guard_sent (guard_t *g, int fd, uint64_t conn, size_t bytes);
/* Peers of this socket speak first and keep speaking (a worker says HELLO when it connects and
 * once a heartbeat interval): a connection from which no complete message has reached the
 * application for within_ms (since it was accepted, or since its last message) is dropped by
 * guard_check, and why (the peers' rule, for the log line) is said with it. ZeroMQ's ROUTER keeps a connection that announces a
 * routing id another connection still holds apart for as long as it lasts, reading none of its
 * messages: dropped, its peer connects again and is heard once the other has gone. Off (0)
 * unless called. */
void guard_expect_speech (guard_t *g, int64_t within_ms, const char *why);
/* Measures every connection; drained: the socket had no complete message left to read.
 * Returns how many connections were cut for their bytes (the silent ones dropped are counted
 * by guard_silent_count). */
int guard_check (guard_t *g, int drained);
/* Cuts one connection (a peer that broke the protocol's limits); why goes to the log. */
void guard_cut (guard_t *g, int fd, const char *why);
/* Cuts the connection a message just received from fd (its ZMQ_SRCFD) came on, when fd is surely
 * still that connection's: a message may be read after its connection closed and fd went to a new
 * one. Not while a connection closed on fd since guard_check last found the socket drained (a
 * message of the old one may still be waiting), nor when none is open on it. 1 when it cut, 0 when
 * it left fd alone (and said so in the log: the sender's next message is cut). */
int guard_cut_sender (guard_t *g, int fd, const char *why);
/* The connection a message just received from fd (its ZMQ_SRCFD) came on, as a number that no
 * other connection of the socket gets, later ones a larger one; 0 when unknown (a message with no
 * descriptor, as over inproc://). A peer whose messages come with another number than before
 * connected again. */
uint64_t guard_connection (guard_t *g, int fd);
/* As guard_connection, for a message about to be answered later: the number of the connection it
 * came on only when that is sure and the connection still open; 0 when a connection closed on fd
 * since the socket was last found drained (the message may be the closed one's), or fd's
 * connection has closed. Answers go by routing id, which a peer can take over once its holder's
 * connection has gone: the number is checked with guard_holds before an answer is sent. Events
 * read within the last 0.1 ms count as read now (a look costs a system call). */
uint64_t guard_sender (guard_t *g, int fd);
/* 1 while connection conn (guard_sender's) is still open on fd, as far as the events read tell
 * (read now, or at most 0.1 ms ago). libzmq reports a connection's end before it lets its routing
 * id go, so while this says 1 no other peer can have taken that id, but for one that does so in
 * that moment or the one between this call and the send that follows it. */
int guard_holds (guard_t *g, int fd, uint64_t conn);
/* A receive on the socket found nothing: every message of the connections whose end was read
 * before it has been read (what guard_check's drained says too). */
void guard_drained (guard_t *g);
uint64_t guard_cut_count (const guard_t *g);
uint64_t guard_silent_count (const guard_t *g);
/* Connections cut for unread answers (counted in guard_cut_count too), and the unread bytes the
 * last guard_check measured. */
uint64_t guard_unsent_cut_count (const guard_t *g);
uint64_t guard_unsent_bytes (const guard_t *g);
/* Connections cut for the unfinished total (counted in guard_cut_count too), and the bytes of
 * unfinished messages the last guard_check measured. */
uint64_t guard_unfinished_cut_count (const guard_t *g);
uint64_t guard_unfinished_bytes (const guard_t *g);
size_t guard_connections (const guard_t *g);
/* How many of the connections have bytes waiting in the kernel that libzmq has not read yet
 * (FIONREAD on each descriptor): a stop's last reads go on while some do, since a loaded
 * machine's libzmq thread may take longer than any quiet time to get to them. */
size_t guard_kernel_unread (const guard_t *g);
#endif
