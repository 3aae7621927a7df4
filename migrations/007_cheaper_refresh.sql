-- 007: two costs every refresh paid in PostgreSQL, removed; what is checked and what is
-- recorded stay the same (issue 10, fourteenth pass, in docs/performance.md).
--
-- integrations.id's CHECK was '^[A-Za-z0-9._:-]{1,128}$'. PostgreSQL's regular expressions expand
-- a bounded repeat into that many copies of the class, so one match cost about 7 microseconds,
-- and PostgreSQL checks every CHECK of a row on every UPDATE, even of other columns: each claim
-- and each commit of a refresh paid it. The same rule as a length and an unbounded class costs
-- about 0.2. The new constraint is added NOT VALID and the old one dropped in one transaction:
-- both change only the catalog (a short ACCESS EXCLUSIVE lock, no scan of the table), and new
-- rows and updates are checked at once. Every row already there passed the old rule, which is the
-- same; 008 validates them anyway, under a lock that blocks no reads or writes.
--
-- events_from_chain, the outbox's trigger on every chain row, read the integration's whole row
-- before it looked at what kind of row it was given. A refresh is an event only when the attempt
-- before it failed ("recovered"), which the previous chain row tells; that row is now read first,
-- and the integration's row only when there is an event to write. Old workers write the same
-- chain rows and get the same events.

ALTER TABLE integrations
    ADD CONSTRAINT integrations_id_format
        CHECK (length (id) BETWEEN 1 AND 128 AND id ~ '^[A-Za-z0-9._:-]+$') NOT VALID,
    DROP CONSTRAINT integrations_id_check;

CREATE OR REPLACE FUNCTION events_from_chain () RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    i integrations%ROWTYPE;
    prev text;
    missing text;
BEGIN
    -- a refresh is an event only after a failed attempt: the previous chain row decides, read on
    -- the chain's index alone, before the integration's row (most refreshes stop here)
    IF NEW.outcome = 'refreshed' THEN
        SELECT c.outcome INTO prev FROM token_chain c
            WHERE c.integration_id = NEW.integration_id AND c.seq < NEW.seq ORDER BY c.seq DESC LIMIT 1;
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
        PERFORM events_emit ('insufficient_scope', i.id, i.provider, 'insufficient_scope', NEW.generation,
                             'missing: ' || left (coalesce (i.scope_report, ''), 2048));
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
