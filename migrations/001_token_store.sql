-- 001: integrations (current state of each token chain) and token_chain (its append-only history).
-- Tokens are stored only as AES-256-GCM ciphertexts (nonce || ciphertext || tag) with the id of
-- the key that sealed them; the associated data binds each value to its integration and column.

CREATE TABLE integrations (
    id                    text PRIMARY KEY
                          CHECK (id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    provider              text NOT NULL,
    status                text NOT NULL DEFAULT 'active'
                          CHECK (status IN ('active', 'needs_reconnect', 'disconnected')),
    key_id                integer NOT NULL,
    access_token          bytea,
    access_expires_at     timestamptz,
    refresh_token         bytea,
    refresh_fingerprint   text,
    generation            bigint NOT NULL DEFAULT 0,
    scopes                text[] NOT NULL DEFAULT '{}',
    -- the refresh lease: who is calling the provider for this row right now, and until when
    lease_owner           text,
    lease_id              bigint,
    lease_expires_at      timestamptz,
    last_error_code       text,
    last_error_message    text,
    last_error_at         timestamptz,
    last_refresh_at       timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX integrations_access_expiry ON integrations (access_expires_at) WHERE status = 'active';

CREATE TABLE token_chain (
    seq                   bigserial PRIMARY KEY,
    integration_id        text NOT NULL REFERENCES integrations (id),
    generation            bigint NOT NULL,
    at                    timestamptz NOT NULL DEFAULT now(),
    worker                text NOT NULL,
    outcome               text NOT NULL
                          CHECK (outcome IN ('imported', 'refreshed', 'adopted', 'invalid_grant', 'transient',
                                             'invalid_client', 'bad_response', 'conflict', 'configuration',
                                             'error', 'disconnected')),
    refresh_fingerprint   text,
    rotated               boolean NOT NULL DEFAULT false,
    detail                text
);

CREATE INDEX token_chain_by_integration ON token_chain (integration_id, seq DESC);

-- History is append-only: refuse updates and deletes of chain rows.
CREATE FUNCTION token_chain_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'token_chain is append-only';
END;
$$;

CREATE TRIGGER token_chain_no_update BEFORE UPDATE OR DELETE ON token_chain
    FOR EACH ROW EXECUTE FUNCTION token_chain_append_only();
