/* curve.h - CURVE keys: Z85 key files, key pairs, and the socket options of each side
 *
 * Keys are read from files only (the form Kubernetes Secrets mount), never from the command line
 * or from a variable's value. A key is 40 characters of Z85 (32 bytes). The variables:
 *   FERRULE_CURVE_SECRET_KEY_FILE    this process's secret key (broker: the server key)
 *   FERRULE_BROKER_PUBLIC_KEY_FILE   the brokers' public key, pinned by workers and clients
 *   FERRULE_ALLOW_PLAINTEXT=1        no keys at all: unauthenticated, unencrypted (tests only) */
#ifndef FERRULE_CURVE_H
#define FERRULE_CURVE_H
#include <stddef.h>
#include "result.h"

#define CURVE_Z85_LEN 40
#define CURVE_ENV_SECRET       "FERRULE_CURVE_SECRET_KEY_FILE"
#define CURVE_ENV_BROKER_KEY   "FERRULE_BROKER_PUBLIC_KEY_FILE"
#define CURVE_ENV_PLAINTEXT    "FERRULE_ALLOW_PLAINTEXT"

/* What one process uses on its links: keys, or the explicit plaintext opt-in. */
typedef struct {
    int  plaintext;                         /* 1: FERRULE_ALLOW_PLAINTEXT=1 and no keys */
    char secret [CURVE_Z85_LEN + 1];        /* this process's secret key */
    char public [CURVE_Z85_LEN + 1];        /* derived from secret */
    char server [CURVE_Z85_LEN + 1];        /* the broker's public key ("" on the broker) */
} curve_identity_t;

/* 1 when s is exactly 40 Z85 characters that decode to 32 bytes. */
int curve_key_valid (const char *s);
/* Reads one Z85 key from a file: the first line that is neither empty nor a "#" comment.
 * FR_OK, or FR_CONFIGURATION with a reason naming the file (never the key). */
fr_status_t curve_read_key_file (const char *path, char out [CURVE_Z85_LEN + 1], char *err, size_t errlen) FR_MUSTCHECK;
/* Writes PREFIX.key (secret, mode 0600, created new) and PREFIX.pub (public). */
fr_status_t curve_keygen (const char *prefix, char public_out [CURVE_Z85_LEN + 1], char *err, size_t errlen) FR_MUSTCHECK;
/* Puts the values a daemon's command line gave (NULL or "": leave the variable as it is) into the
 * three variables above, where curve_identity_from_env reads them. */
void curve_env_set (const char *secret_file, const char *broker_key_file, const char *plaintext);
/* Fills id from the environment. need_server: a client or worker (the broker's key is needed).
 * FR_OK; FR_CONFIGURATION when keys are missing or unreadable and plaintext is not allowed. */
fr_status_t curve_identity_from_env (curve_identity_t *id, int need_server, char *err, size_t errlen) FR_MUSTCHECK;
/* Wipes the secret. */
void curve_identity_clear (curve_identity_t *id);
/* Socket options before connect (client side) or bind (server side, with a ZAP domain).
 * A plaintext identity sets nothing. 0, or -1 with errno. */
int curve_apply_client (void *socket, const curve_identity_t *id);
int curve_apply_server (void *socket, const curve_identity_t *id, const char *zap_domain);
#endif
