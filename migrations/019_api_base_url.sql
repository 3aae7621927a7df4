-- 019: the base URL of the provider's API for an integration's grant. Salesforce answers every
-- code exchange and refresh with instance_url, the org's own API host, without which its access
-- token is of no use; a catalog entry names such a field (api_base_field) and workers keep it here,
-- so that a token reply carries it as api_base_url. NULL for providers that name none, and for
-- integrations stored before this migration (their next refresh fills it).
-- Adding a nullable column without a default rewrites nothing: a short ACCESS EXCLUSIVE lock.

ALTER TABLE integrations ADD COLUMN api_base_url text;
COMMENT ON COLUMN integrations.api_base_url IS
    'the provider''s API base URL for this grant (the catalog''s api_base_field of its token answers, e.g. Salesforce''s instance_url), or NULL';
