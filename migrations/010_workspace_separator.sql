-- 010: a workspace (the integration-id prefix of an API key or a dashboard link) ends with a
-- separator, one of : . _ - (common/ident.h, ident_workspace_valid): "acct4" would also cover
-- "acct42:x", another customer's ids. The workers refuse to make such keys and links since
-- the rule came in; this makes the database refuse them too. 005's CHECK stays: it is the
-- shape of any id.
--
-- Keys and links stored before the rule stay readable and revocable, and the gateway refuses
-- them with a message (worker/gwops.h). So the constraints are NOT VALID: adding them scans
-- nothing and leaves those rows in place. But PostgreSQL checks a NOT VALID CHECK on every new
-- row version, an UPDATE's too, so a bare rule would make revoking an old key (revoked_at),
-- verifying it (last_used_at) or spending an old link (used_at) fail with a violation. The
-- rule therefore binds a row as it is created, before it was ever used, revoked or spent; the
-- workers never create a row in any of those states.

ALTER TABLE gateway_api_keys
    ADD CONSTRAINT gateway_api_keys_workspace_end
        CHECK (right (workspace, 1) IN (':', '.', '_', '-') OR revoked_at IS NOT NULL OR last_used_at IS NOT NULL)
        NOT VALID;

ALTER TABLE gateway_dashboard_links
    ADD CONSTRAINT gateway_dashboard_links_workspace_end
        CHECK (right (workspace, 1) IN (':', '.', '_', '-') OR used_at IS NOT NULL)
        NOT VALID;
