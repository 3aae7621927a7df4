-- 009: each integration's routing hash (FNV-1a 64 of its id, as common/ring.c computes it, stored
-- as the signed bigint of the same 64 bits), so that a worker's sweep reads the integrations of
-- its own partitions instead of the first due ones of the whole deployment (docs/architecture.md,
-- "Callers never wait on a provider"). Workers write it when they create a row, and fill it in for
-- older rows as their sweeps meet them; a row without it is read by every worker's sweep, as all
-- rows were before. Adding a nullable column without a default rewrites nothing.

ALTER TABLE integrations ADD COLUMN route_hash bigint;
COMMENT ON COLUMN integrations.route_hash IS
    'FNV-1a 64 of id (common/ring.c), as a signed bigint; the partition is its unsigned value modulo the partition count. NULL until a worker fills it in';
