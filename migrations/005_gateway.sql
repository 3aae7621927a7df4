-- 005: the gateway (issue 11): return_to on a connect, single-use retry tokens for a failed
-- callback, short-lived dashboard links, and the API keys of a workspace.
--
-- Every secret value (retry token, dashboard link token, API key) is stored only as the
-- SHA-256 (hex) of its value; the value itself is shown once and never kept. The runtime role
-- may not DELETE: spending or revoking a value is an UPDATE that sets used_at / revoked_at.

ALTER TABLE pending_authorizations
    ADD COLUMN return_to text CHECK (return_to IS NULL OR length(return_to) BETWEEN 1 AND 2048),
    ADD COLUMN retry_issued boolean NOT NULL DEFAULT false;   -- a retry token was drawn for it

-- "Try again" after a failed callback: a fresh connect with the failed attempt's integration,
-- provider, scopes, redirect URI and return_to, usable once, for a few minutes.
CREATE TABLE gateway_retry_tokens (
    token_hash        text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    state_hash        text NOT NULL,                           -- the failed attempt (no foreign key: spent
                                                               -- attempts are collected after a day)
    integration_id    text NOT NULL CHECK (integration_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    provider          text NOT NULL,
    redirect_uri      text NOT NULL CHECK (length(redirect_uri) BETWEEN 1 AND 2048),
    requested_scopes  text[] NOT NULL DEFAULT '{}',
    return_to         text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    used_at           timestamptz
);

-- A dashboard link for one workspace (an integration-id prefix such as "acct42:"): exchanged
-- once for a gateway session.
CREATE TABLE gateway_dashboard_links (
    token_hash        text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    workspace         text NOT NULL CHECK (workspace ~ '^[A-Za-z0-9._:-]{1,128}$'),
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    used_at           timestamptz
);

-- API keys of a workspace for the gateway's HTTP API.
CREATE TABLE gateway_api_keys (
    id                bigserial PRIMARY KEY,
    key_hash          text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    workspace         text NOT NULL CHECK (workspace ~ '^[A-Za-z0-9._:-]{1,128}$'),
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    prefix            text NOT NULL CHECK (length(prefix) BETWEEN 1 AND 16),  -- shown to tell keys apart
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_used_at      timestamptz,
    revoked_at        timestamptz
);
CREATE INDEX gateway_api_keys_by_workspace ON gateway_api_keys (workspace, created_at DESC);

-- Listing a workspace reads integrations by id prefix: an ordered range scan on this index
-- (byte order, whatever the database's collation), stopped by its LIMIT, never a sequential
-- scan of the table the token path reads.
CREATE INDEX integrations_id_c ON integrations (id COLLATE "C");
