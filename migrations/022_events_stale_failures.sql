-- 022: a failed refresh recorded after its row moved on made a false "recovered" event.
--
-- A refresh whose provider call failed while the row moved on (another worker's commit after a
-- lease takeover, an import or a reconnect) records its failure as stale: the status and last
-- error stay. Its chain row was written at the row's new generation, and since 022's workers at
-- the failed token's own generation. Either way it came after the newer token's row in the chain,
-- and the next refresh of the newer token, which worked, read it as the attempt before it and made
-- a "recovered" event although nothing had failed for that token. The function now takes the
-- previous row from the generation the refresh started from (the new row's generation less one)
-- or later, so a failure of an older token is passed over.
--
-- Everything else in the function is 017's, unchanged. A catalog change only, in a transaction;
-- workers of the previous release get the new events too (their stale failures, written at the
-- row's current generation, still read as that generation's).

CREATE OR REPLACE FUNCTION events_from_chain () RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    i integrations%ROWTYPE;
    prev text;
    prev_detail text;
    missing text;
BEGIN
    -- a refresh is an event only after a failed attempt: the previous chain row decides, read on
    -- the chain's index alone, before the integration's row (most refreshes stop here). Only a
    -- row of the generation the refresh started from or later (022): an attempt recorded after
    -- the row moved on failed for an older token, and says nothing of this one
    IF NEW.outcome = 'refreshed' THEN
        -- a refresh token stored without a usable access token recovers nothing, and is a bad
        -- answer to the refresh after it
        IF NEW.detail LIKE '%no usable access token: %' THEN
            RETURN NULL;
        END IF;
        SELECT c.outcome, c.detail INTO prev, prev_detail FROM token_chain c
            WHERE c.integration_id = NEW.integration_id AND c.seq < NEW.seq
              AND c.generation >= NEW.generation - 1 ORDER BY c.seq DESC LIMIT 1;
        IF prev = 'refreshed' AND prev_detail LIKE '%no usable access token: %' THEN
            prev := 'bad_response';
        END IF;
        IF prev IS NULL OR prev NOT IN ('transient', 'bad_response', 'error', 'invalid_grant') THEN
            RETURN NULL;
        END IF;
    END IF;
    SELECT * INTO i FROM integrations WHERE id = NEW.integration_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF NEW.outcome IN ('imported', 'connected') THEN
        IF EXISTS (SELECT 1 FROM token_chain c WHERE c.integration_id = NEW.integration_id
                   AND c.seq < NEW.seq AND c.outcome IN ('imported', 'connected')) THEN
            PERFORM events_emit ('reconnected', i.id, i.provider, 'healthy', NEW.generation, NULL);
        ELSE
            PERFORM events_emit ('connected', i.id, i.provider, 'healthy', NEW.generation, NULL);
        END IF;
        IF NEW.outcome = 'connected' AND i.refresh_token_missing THEN
            PERFORM events_emit ('no_refresh_token', i.id, i.provider, 'no_refresh_token', NEW.generation,
                                 'the provider issued no refresh token: the integration works until its access token expires');
        END IF;
        IF NEW.outcome = 'connected' AND i.requested_scopes IS NOT NULL AND NOT (i.requested_scopes <@ i.scopes) THEN
            SELECT string_agg (s, ' ' ORDER BY s) INTO missing
                FROM unnest (i.requested_scopes) s WHERE s <> ALL (i.scopes);
            PERFORM events_emit ('scopes_reduced', i.id, i.provider, 'scopes_reduced', NEW.generation,
                                 'not granted: ' || left (missing, 2048));
        END IF;
    ELSIF NEW.outcome = 'disconnected' THEN
        PERFORM events_emit ('disconnected', i.id, i.provider, 'disconnected', NEW.generation, NULL);
    ELSIF NEW.outcome = 'scope_reported' THEN
        -- RFC 6750 lets an API refuse for a missing scope without naming it (stored as '')
        PERFORM events_emit ('insufficient_scope', i.id, i.provider, 'insufficient_scope', NEW.generation,
                             CASE WHEN coalesce (i.scope_report, '') = ''
                                  THEN 'an upstream API answered insufficient_scope and did not name the scope it needs'
                                  ELSE 'missing: ' || left (i.scope_report, 2048) END);
    ELSIF NEW.outcome = 'refreshed' THEN
        -- works again after transient failures, or after an invalid_grant that a stalled
        -- worker's rotated token overrode (docs/architecture.md); prev was read above
        IF prev = 'invalid_grant' THEN
            -- only when that invalid_grant had made it needs_reconnect (one for a superseded
            -- token changes nothing, and so recovers nothing)
            SELECT e.type INTO prev FROM events e
                WHERE e.integration_id = NEW.integration_id
                  AND e.type IN ('needs_reconnect', 'connected', 'reconnected', 'recovered')
                ORDER BY e.seq DESC LIMIT 1;
            IF prev = 'needs_reconnect' THEN
                prev := 'invalid_grant';
            END IF;
        END IF;
        IF prev IN ('transient', 'bad_response', 'error', 'invalid_grant') THEN
            PERFORM events_emit ('recovered', i.id, i.provider, 'healthy', NEW.generation,
                                 'the last attempt before this refresh ended ' || prev);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
