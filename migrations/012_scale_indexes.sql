-- ferrule-migrate: no-transaction
-- 012: three indexes, so that what the workers ask of the chain and of the sweep's candidates reads
-- the rows it wants instead of every row behind them (issue 10, twentieth pass, in
-- docs/performance.md). Built with CREATE INDEX CONCURRENTLY, outside a transaction (the first
-- line above): a plain CREATE INDEX would hold every refresh's commit, which writes both tables,
-- for the whole build. Each statement is safe to run again; ferrule-migrate drops an index a
-- failed build left invalid before building it again.
--
-- Connects and imports, the rare rows of a chain (one per grant against one per refresh):
-- events_from_chain asks whether an integration was connected before (to say "reconnected"), and
-- the workers' forecast asks when each grant began. Both read the chain's index on
-- (integration_id, seq) back to the integration's first row: 5,000 rows for seven months of hourly
-- refreshes, half a second cold, inside the commit that records the reconnect.
CREATE INDEX CONCURRENTLY IF NOT EXISTS token_chain_grants
    ON token_chain (integration_id, seq) WHERE outcome IN ('imported', 'connected');

-- The forecast of grants near their age limit starts from the grants that began in its window,
-- not from every integration of the provider.
CREATE INDEX CONCURRENTLY IF NOT EXISTS token_chain_grants_by_time
    ON token_chain (at) WHERE outcome IN ('imported', 'connected');

-- events_from_status asks whether the generation that just failed was interrupted mid-rotation,
-- which is rarer still.
CREATE INDEX CONCURRENTLY IF NOT EXISTS token_chain_interrupted
    ON token_chain (integration_id, generation) WHERE outcome = 'interrupted';

-- The sweep's expiry index without the rows it can never refresh: an integration connected
-- without a refresh token keeps its expired access token at the head of the old index, and every
-- pass of every worker read past all of them. The sweep's queries already say refresh_token IS NOT
-- NULL; the old index goes once the new one is valid (no statement names it).
CREATE INDEX CONCURRENTLY IF NOT EXISTS integrations_refreshable_expiry
    ON integrations (access_expires_at) WHERE status = 'active' AND refresh_token IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS integrations_access_expiry;
