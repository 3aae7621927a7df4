-- 002: the connect flow (OAuth authorization code with PKCE) and what users need diagnosed.
--
-- pending_authorizations holds one row per "connect": the state the browser carries to the
-- provider and back, stored only as the SHA-256 (hex) of its value, and the PKCE code_verifier
-- sealed with AES-256-GCM (associated data: the state hash and the column name, so a verifier
-- copied to another row will not open). A callback marks its row used in the same statement
-- that reads it, so a reloaded callback URL cannot exchange a code twice.

CREATE TABLE pending_authorizations (
    state_hash            text PRIMARY KEY
                          CHECK (state_hash ~ '^[0-9a-f]{64}$'),
    integration_id        text NOT NULL
                          CHECK (integration_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    provider              text NOT NULL,
    redirect_uri          text NOT NULL
                          CHECK (length(redirect_uri) BETWEEN 1 AND 2048),
    requested_scopes      text[] NOT NULL DEFAULT '{}',
    key_id                integer,                -- the key that sealed code_verifier
    code_verifier         bytea,                  -- NULL when the provider does not use PKCE
    created_at            timestamptz NOT NULL DEFAULT now(),
    expires_at            timestamptz NOT NULL DEFAULT now() + interval '10 minutes',
    used_at               timestamptz,
    -- how the callback ended, for "doctor" on an integration whose first connect failed
    outcome               text,                   -- a wire error code, or 'connected'
    outcome_detail        text
);

CREATE INDEX pending_authorizations_by_integration ON pending_authorizations (integration_id, created_at DESC);
CREATE INDEX pending_authorizations_expiry ON pending_authorizations (expires_at);

ALTER TABLE integrations
    ADD COLUMN requested_scopes      text[],                          -- what the last connect asked for
    ADD COLUMN refresh_token_missing boolean NOT NULL DEFAULT false,  -- connected without a refresh token
    ADD COLUMN scope_report          text,                            -- scopes an upstream API said were missing
    ADD COLUMN scope_report_at       timestamptz,
    ADD COLUMN disconnected_at       timestamptz;

-- New chain outcomes: a connect that stored tokens, a connect whose callback failed, the
-- provider's answer to a revocation, and a caller's report of an upstream insufficient_scope.
ALTER TABLE token_chain DROP CONSTRAINT token_chain_outcome_check;
ALTER TABLE token_chain ADD CONSTRAINT token_chain_outcome_check
    CHECK (outcome IN ('imported', 'refreshed', 'adopted', 'invalid_grant', 'transient',
                       'invalid_client', 'bad_response', 'conflict', 'configuration',
                       'error', 'disconnected', 'connected', 'connect_failed', 'revoked',
                       'revocation_failed', 'scope_reported'));
