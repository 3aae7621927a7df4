-- 004: least privilege. The workers run as a runtime role that "ferrule-migrate grant-runtime ROLE"
-- sets up; it may read and write the current state, append to the chain, and nothing else: no
-- DDL, no TRUNCATE, no DELETE (docs/operations.md, "Roles, secrets and key rotation").

-- The runtime roles grant-runtime has set up: "ferrule-migrate up" grants them again after every
-- migration, so a table a later release adds is usable by the workers as soon as it exists.
CREATE TABLE runtime_roles (
    role                  name PRIMARY KEY,
    granted_at            timestamptz NOT NULL DEFAULT now()
);

-- Spent and expired connect states are removed by this function, which runs with its owner's
-- rights: the runtime role has no DELETE on any table, only EXECUTE on this. It removes nothing
-- younger than a day past its expiry, whoever calls it. Its search_path is this schema, then
-- pg_temp last, so a caller's temporary table cannot stand in for the real one.
DO $do$
BEGIN
    EXECUTE format($f$
        CREATE FUNCTION %1$I.ferrule_gc_pending_authorizations () RETURNS bigint
            LANGUAGE sql SECURITY DEFINER SET search_path = %1$I, pg_temp AS $body$
            WITH gone AS (DELETE FROM pending_authorizations WHERE expires_at < now() - interval '1 day'
                          RETURNING 1)
            SELECT count(*) FROM gone
        $body$ $f$, current_schema ());
END
$do$;
REVOKE ALL ON FUNCTION ferrule_gc_pending_authorizations () FROM PUBLIC;

-- The chain is append-only for everyone, the owner included: TRUNCATE empties a table without
-- firing row triggers, so it gets a statement trigger of its own.
CREATE TRIGGER token_chain_no_truncate BEFORE TRUNCATE ON token_chain
    FOR EACH STATEMENT EXECUTE FUNCTION token_chain_append_only();
