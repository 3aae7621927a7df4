/* store.h - what the fake authorization server has issued: token chains, tokens and codes */
#ifndef FAKE_STORE_H
#define FAKE_STORE_H
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define STORE_NAME_MAX   64     /* provider names: [A-Za-z0-9_-]{1,64} */
#define STORE_TOKEN_LEN  48     /* "fake-code-" + 32 hex + NUL fits */
#define STORE_ACCOUNT_MAX 64    /* an account name (/authorize's login_hint) */
#define STORE_DEFAULT_ACCOUNT "user"    /* the account of a sign-in that names none */

typedef enum { TOKEN_ACCESS, TOKEN_REFRESH, TOKEN_CODE } token_kind_t;

typedef struct store_t store_t;
typedef struct chain_t chain_t;
typedef struct code_t code_t;

typedef struct {
    token_kind_t kind;
    char     value [STORE_TOKEN_LEN];
    chain_t *chain;              /* access and refresh tokens: the chain they belong to */
    code_t  *code;               /* codes: the authorization request they answer (owned) */
    int64_t  expires_ms;         /* access tokens and codes, monotonic clock */
    int64_t  spent_ms;           /* refresh tokens: when rotated away, 0 while current */
    bool     grace_used;         /* refresh tokens: the one replay reuse_grace_s allows is used */
    bool     revoked;            /* revoked on its own (revoke_whole_grant false); the chain may live on */
} token_t;

/* One user's grant: every token minted from one code or admin grant. */
struct chain_t {
    long     id;
    char     provider [STORE_NAME_MAX + 1];
    char     account [STORE_ACCOUNT_MAX + 1];  /* the user who signed in */
    json_t  *scopes;             /* array of granted scope strings */
    token_t *refresh;            /* current refresh token, NULL when none was issued */
    token_t *access;             /* newest access token */
    long     generation;         /* successful refreshes */
    int64_t  rotated_ms;         /* wall clock of the last refresh that issued a new refresh token, 0 none */
    long     refresh_calls;
    bool     revoked;
    bool     reuse_detected;
};

struct code_t {
    char     provider [STORE_NAME_MAX + 1];
    char     account [STORE_ACCOUNT_MAX + 1];  /* the user who signed in */
    char    *redirect_uri;
    json_t  *scopes;             /* granted */
    char    *challenge;          /* NULL without PKCE */
    char     challenge_method [8];
    bool     used;
    chain_t *chain;              /* chain issued from this code, for revocation on replay */
};

store_t *store_new (void);
void store_destroy (store_t **p);

/* A new chain for provider and account (NULL: STORE_DEFAULT_ACCOUNT) with a copy of scopes (an
   array of strings). */
chain_t *store_chain_new (store_t *store, const char *provider, const char *account, const json_t *scopes);
chain_t *store_chain_by_id (const store_t *store, long id);
size_t   store_chain_count (const store_t *store);
/* Revokes every chain of provider that account signed in to (Google's grant: one per account and
   client); returns how many were live. */
size_t   store_revoke_account (store_t *store, const char *provider, const char *account);

/* Mints a new access token for chain, valid ttl_s seconds from now_ms; it becomes chain->access. */
token_t *store_issue_access (store_t *store, chain_t *chain, long ttl_s, int64_t now_ms);
/* Mints a new refresh token; it becomes chain->refresh (the caller spends the old one). */
token_t *store_issue_refresh (store_t *store, chain_t *chain);
/* Mints a code taking ownership of code, valid ttl_s seconds. */
token_t *store_issue_code (store_t *store, code_t *code, long ttl_s, int64_t now_ms);

/* The token with this exact value, or NULL. */
token_t *store_lookup (const store_t *store, const char *value);

code_t *store_code_new (const char *provider, const char *account, const char *redirect_uri, const json_t *scopes,
                        const char *challenge, const char *challenge_method);
void store_code_destroy (code_t **p);
#endif
