-- 003: what the refresh protocol needs to never lose or misjudge a rotated refresh token.
--
-- lease_token: the refresh lease's id, 128 random bits from the operating system, matched together
-- with lease_owner by every statement that touches a lease. It replaces lease_id (64 bits from a
-- time-and-pid seeded PRNG, which collided between containers started in the same second). Old
-- workers keep writing lease_id during a rolling upgrade; both kinds see each other's leases through
-- lease_owner and lease_expires_at, and neither can clear the other's (they match different columns).
--
-- access_lifetime_s: the lifetime of the stored access token when it was issued (the provider's
-- expires_in), so that refresh-ahead and the sweep size their windows by the token itself from the
-- very first request after a connect or an import.
--
-- interrupted_generation: the generation at which a refresh was found interrupted (its worker died
-- or stalled past its lease while the provider call may have been in flight). An invalid_grant at
-- that generation then means: the provider rotated the refresh token and the answer never reached
-- the database.

ALTER TABLE integrations
    ADD COLUMN lease_token            uuid,
    ADD COLUMN access_lifetime_s      integer CHECK (access_lifetime_s IS NULL OR access_lifetime_s >= 0),
    ADD COLUMN interrupted_generation bigint;

-- Lifetimes of tokens a refresh stored before this migration; imported ones stay unknown until
-- their first refresh.
UPDATE integrations SET access_lifetime_s = GREATEST(extract(epoch FROM access_expires_at - last_refresh_at)::integer, 0)
    WHERE access_expires_at IS NOT NULL AND last_refresh_at IS NOT NULL AND access_expires_at > last_refresh_at;

ALTER TABLE token_chain DROP CONSTRAINT token_chain_outcome_check;
ALTER TABLE token_chain ADD CONSTRAINT token_chain_outcome_check
    CHECK (outcome IN ('imported', 'refreshed', 'adopted', 'invalid_grant', 'transient',
                       'invalid_client', 'bad_response', 'conflict', 'configuration',
                       'error', 'disconnected', 'connected', 'connect_failed', 'revoked',
                       'revocation_failed', 'scope_reported', 'interrupted'));
