/* links.h - the worker's links to the brokers: connect (static endpoints and dns+tcp:// names
 * followed as they change), heartbeat, receive requests, send replies */
#ifndef FERRULE_LINKS_H
#define FERRULE_LINKS_H
#include "context.h"
#include "frames.h"
#include <zmq.h>

#define LINKS_MAX           64      /* brokers one worker serves at once */
#define LINKS_MAX_DNS_NAMES 8

/* Opens a link per endpoint of backends (comma-separated; dns+tcp://NAME:PORT follows every
 * address NAME resolves to). FR_CONFIGURATION with err when none or one cannot be opened. */
fr_status_t links_setup (worker_t *w, const char *backends, char *err, size_t errlen) FR_MUSTCHECK;
void links_close_all (worker_t *w);
/* Resolves the dns+tcp:// names again when due: new brokers are linked, vanished ones closed. */
void links_follow_dns (worker_t *w, int64_t now_ms);
/* Makes again a link its broker has not PINGed for five heartbeat intervals (the broker lost this
 * worker, or never heard its new connection). */
void links_check_silent (worker_t *w, int64_t now_ms);
/* The open links' sockets for zmq_poll, with link_of [i] the link index of items [i]. */
size_t links_pollitems (worker_t *w, zmq_pollitem_t *items, int *link_of, size_t max);
/* Reads one message from link li; *taken is 1 when a message was taken off the link, whatever it
 * held, 0 when none was waiting. FR_OK: a request, job filled, its body frames_data (frames,
 * LINKS_BODY_FRAME), not yet decoded; FR_NOT_FOUND: nothing for requests_handle (no message, a
 * heartbeat, a malformed message that was logged). The caller frames_close (frames) in every
 * case. */
#define LINKS_BODY_FRAME 5
fr_status_t links_receive (worker_t *w, int li, int *taken, frames_t *frames, job_t *job);
/* Sends a reply body to job's broker, with its outcome code ("ok" or an error's) for the
 * broker's audit log. A job without a link (background work) or whose broker is gone: nothing. */
void links_send (worker_t *w, const job_t *job, const char *body, size_t len, const char *outcome);
/* HELLO to every broker (the heartbeat, and the drain announcement), and BYE when leaving. */
void links_hello (worker_t *w, int draining);
void links_bye (worker_t *w);
#endif
