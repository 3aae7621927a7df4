-- 020: a connect started from the dashboard is bound to the browser that started it. The gateway
-- gives that browser a random cookie (ferrule_flow) and passes it with the connect and with the
-- callback; the worker keeps only the SHA-256 (hex) of the value, here. A callback whose binding
-- is absent or hashes differently spends the state with outcome 'browser_mismatch' and never
-- exchanges the code, so an authorization URL sent to someone else cannot connect their account
-- to the sender's integration. NULL: an unbound connect (the API, ferrulectl), unchanged.
ALTER TABLE pending_authorizations
    ADD COLUMN IF NOT EXISTS browser_hash text CHECK (browser_hash IS NULL OR browser_hash ~ '^[0-9a-f]{64}$');
