-- ferrule-migrate: no-transaction
-- 021: an index over the integrations that have no routing hash yet (009). Every "ferrule-migrate
-- up" looks for such rows to fill their hash in (migrations/routehash.c), and no index served the
-- look: it walked the whole primary key and read every row of the table to find none, on every
-- deploy once the hashes were filled (10 million rows read per "up", and nothing said, since
-- nothing was filled in). This index holds only the rows without a hash, in id order as the look
-- reads them, so a look that finds none reads one empty page. It stays empty: workers of this
-- release write the hash of every row they make, and a write that leaves route_hash as it was
-- touches no entry (a refresh's commit stays a HOT update). Workers of the previous release leave
-- the hash of the rows they make empty; those rows are entered, until the next "up" or a sweep
-- fills them in. The workers' sweep has no use for it (it reads the expiry index, and takes a row
-- without a hash as everyone's), and no statement names it. Built concurrently, outside a
-- transaction (the first line above; see 012); safe to run again.
CREATE INDEX CONCURRENTLY IF NOT EXISTS integrations_route_hash_missing
    ON integrations (id) WHERE route_hash IS NULL;
