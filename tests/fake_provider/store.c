/* store.c - tokens live in one hash table; chains in an array indexed by id */
#include "store.h"
#include "mem.h"
#include "log.h"
#include "tokmap.h"
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct store_t {
    tokmap_t *tokens;            /* value -> token_t, owns the tokens */
    chain_t **chains;            /* chains [id - 1] */
    size_t    nchains;
    size_t    chains_cap;
};

store_t *
store_new (void)
{
    store_t *store = mem_alloc (sizeof *store);
    store->tokens = tokmap_new ();
    return store;
}

static void
token_free (void *value)
{
    token_t *token = value;
    store_code_destroy (&token->code);
    mem_wipe (token->value, sizeof token->value);
    mem_free (token);
}

void
store_destroy (store_t **p)
{
    if (!p || !*p)
        return;
    store_t *store = *p;
    tokmap_destroy (&store->tokens, token_free);
    for (size_t i = 0; i < store->nchains; i++) {
        json_decref (store->chains [i]->scopes);
        mem_free (store->chains [i]);
    }
    mem_free (store->chains);
    mem_free (store);
    *p = NULL;
}

chain_t *
store_chain_new (store_t *store, const char *provider, const char *account, const json_t *scopes)
{
    chain_t *chain = mem_alloc (sizeof *chain);
    if (store->nchains == store->chains_cap) {
        store->chains_cap = store->chains_cap ? store->chains_cap * 2 : 64;
        store->chains = mem_realloc (store->chains, store->chains_cap * sizeof *store->chains);
    }
    store->chains [store->nchains++] = chain;
    chain->id = (long) store->nchains;
    snprintf (chain->provider, sizeof chain->provider, "%s", provider);
    snprintf (chain->account, sizeof chain->account, "%s", account ? account : STORE_DEFAULT_ACCOUNT);
    chain->scopes = scopes ? json_deep_copy (scopes) : json_array ();
    if (!chain->scopes)
        chain->scopes = json_array ();
    return chain;
}

chain_t *
store_chain_by_id (const store_t *store, long id)
{
    if (id < 1 || (size_t) id > store->nchains)
        return NULL;
    return store->chains [id - 1];
}

size_t
store_chain_count (const store_t *store)
{
    return store->nchains;
}

size_t
store_revoke_account (store_t *store, const char *provider, const char *account)
{
    size_t n = 0;
    for (size_t i = 0; i < store->nchains; i++) {
        chain_t *chain = store->chains [i];
        if (chain->revoked || strcmp (chain->provider, provider) != 0 || strcmp (chain->account, account) != 0)
            continue;
        chain->revoked = true;
        n++;
    }
    return n;
}

/* Fills value with prefix and 32 hex characters from the CSPRNG. */
static void
random_token (char *value, size_t cap, const char *prefix)
{
    unsigned char raw [16];
    static const char hex [] = "0123456789abcdef";
    size_t pos = (size_t) snprintf (value, cap, "%s", prefix);

    if (RAND_bytes (raw, sizeof raw) != 1) {
        log_error (NULL, NULL, "could not draw random bytes for a token: the system random source failed");
        abort ();
    }
    for (size_t i = 0; i < sizeof raw && pos + 2 < cap; i++) {
        value [pos++] = hex [raw [i] >> 4];
        value [pos++] = hex [raw [i] & 15];
    }
    value [pos] = '\0';
    mem_wipe (raw, sizeof raw);
}

static token_t *
token_new (store_t *store, token_kind_t kind, const char *prefix)
{
    token_t *token = mem_alloc (sizeof *token);
    token->kind = kind;
    do
        random_token (token->value, sizeof token->value, prefix);
    while (tokmap_get (store->tokens, token->value));   /* 128 bits: never, but cheap to be sure */
    tokmap_put (store->tokens, token->value, token);
    return token;
}

token_t *
store_issue_access (store_t *store, chain_t *chain, long ttl_s, int64_t now_ms)
{
    token_t *token = token_new (store, TOKEN_ACCESS, "fake-at-");
    token->chain = chain;
    token->expires_ms = now_ms + (int64_t) ttl_s * 1000;
    chain->access = token;
    return token;
}

token_t *
store_issue_refresh (store_t *store, chain_t *chain)
{
    token_t *token = token_new (store, TOKEN_REFRESH, "fake-rt-");
    token->chain = chain;
    chain->refresh = token;
    return token;
}

token_t *
store_issue_code (store_t *store, code_t *code, long ttl_s, int64_t now_ms)
{
    token_t *token = token_new (store, TOKEN_CODE, "fake-code-");
    token->code = code;
    token->expires_ms = now_ms + (int64_t) ttl_s * 1000;
    return token;
}

token_t *
store_lookup (const store_t *store, const char *value)
{
    if (!value || strlen (value) >= STORE_TOKEN_LEN)
        return NULL;
    return tokmap_get (store->tokens, value);
}

code_t *
store_code_new (const char *provider, const char *account, const char *redirect_uri, const json_t *scopes,
                const char *challenge, const char *challenge_method)
{
    code_t *code = mem_alloc (sizeof *code);
    snprintf (code->provider, sizeof code->provider, "%s", provider);
    snprintf (code->account, sizeof code->account, "%s", account ? account : STORE_DEFAULT_ACCOUNT);
    code->redirect_uri = mem_strdup (redirect_uri);
    code->scopes = scopes ? json_deep_copy (scopes) : json_array ();
    if (!code->scopes)
        code->scopes = json_array ();
    code->challenge = challenge ? mem_strdup (challenge) : NULL;
    snprintf (code->challenge_method, sizeof code->challenge_method, "%s",
              challenge_method ? challenge_method : "");
    return code;
}

void
store_code_destroy (code_t **p)
{
    if (!p || !*p)
        return;
    code_t *code = *p;
    mem_free (code->redirect_uri);
    mem_free (code->challenge);
    json_decref (code->scopes);
    mem_free (code);
    *p = NULL;
}
