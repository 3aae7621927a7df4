-- 011: when an integration's current grant was connected or imported. A refresh token that a
-- provider ends when unused (refresh_token_idle_days) is idle since its last refresh or, if it has
-- not been refreshed since, since its grant began; that was taken from created_at, the
-- integration's first creation, so a grant connected again after a long break (a needs_reconnect
-- that lasted weeks) counted as idle from the old grant's last refresh: the sweep refreshed it at
-- once and the forecast could warn of its expiry. Workers set it on every connect and import.
-- Adding a nullable column without a default rewrites nothing.

ALTER TABLE integrations ADD COLUMN connected_at timestamptz;
COMMENT ON COLUMN integrations.connected_at IS
    'when the current grant was connected or imported; NULL for grants stored before migration 011 (created_at stands in)';
