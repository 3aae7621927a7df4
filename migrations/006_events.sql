-- 006: events, never lost (docs/architecture.md, "Events: the outbox and its delivery").
--
-- events is a transactional outbox: triggers on integrations and token_chain write the event
-- row inside the transaction of the state change that causes it, so an event exists if and
-- only if that change committed. Every state change of an integration (refresh commit, import,
-- connect, disconnect, report_scope) updates its row, which holds the row lock until commit:
-- two events of one integration therefore commit in the order of their seq, and delivery in
-- seq order per integration is delivery in the order of the changes.
--
-- event_deliveries holds one row per event and webhook endpoint (the workers create them from
-- their configuration), with the delivery state, the attempts and a lease: a worker claims a
-- due row with FOR UPDATE SKIP LOCKED, sets a lease, commits, sends, and records the outcome
-- only while the lease is still its own. A worker killed mid-delivery leaves a lease that
-- expires; the next claim sends the event again (at least once: receivers dedupe by id).

CREATE TABLE events (
    seq                   bigserial PRIMARY KEY,
    id                    uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    type                  text NOT NULL
                          CHECK (type IN ('needs_reconnect', 'disconnected', 'scopes_reduced',
                                          'insufficient_scope', 'no_refresh_token', 'connected',
                                          'reconnected', 'recovered', 'expiring', 'test')),
    integration_id        text CHECK (integration_id ~ '^[A-Za-z0-9._:-]{1,128}$'),  -- NULL: test events only
    provider              text,
    diagnosis             text NOT NULL,          -- a doctor code (docs/protocol.md)
    generation            bigint,
    detail                text,                   -- never a token
    expires_at            timestamptz,            -- expiring: when the provider is expected to end the grant
    dedupe_key            text UNIQUE,            -- forecasts: one event per condition
    endpoint              text,                   -- test events: the one endpoint to send it to
    created_at            timestamptz NOT NULL DEFAULT now(),
    CHECK ((type = 'test') = (integration_id IS NULL))
);

CREATE INDEX events_by_integration ON events (integration_id, seq);
CREATE INDEX events_by_time ON events (created_at);

CREATE TABLE event_deliveries (
    event_seq             bigint NOT NULL REFERENCES events (seq),
    endpoint              text NOT NULL CHECK (endpoint ~ '^[A-Za-z0-9._-]{1,64}$'),
    integration_id        text,                   -- the event's, for the per-integration order
    state                 text NOT NULL DEFAULT 'pending'
                          CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts              integer NOT NULL DEFAULT 0,
    first_at              timestamptz NOT NULL DEFAULT now(),   -- the max age counts from here
    next_at               timestamptz NOT NULL DEFAULT now(),
    lease_owner           text,
    lease_token           text,
    lease_expires_at      timestamptz,
    last_attempt_at       timestamptz,
    last_status           integer,                -- HTTP status of the last attempt, NULL: no answer
    last_error            text,
    delivered_at          timestamptz,
    failed_at             timestamptz,
    PRIMARY KEY (event_seq, endpoint)
);

CREATE INDEX event_deliveries_due ON event_deliveries (next_at) WHERE state = 'pending';
CREATE INDEX event_deliveries_queue ON event_deliveries (endpoint, integration_id, event_seq)
    WHERE state = 'pending';
CREATE INDEX event_deliveries_by_endpoint ON event_deliveries (endpoint, state);
-- "webhooks" (the webhook's doctor) reads the last day's deliveries without counting them all
CREATE INDEX event_deliveries_delivered ON event_deliveries (endpoint, delivered_at) WHERE state = 'delivered';

-- One event row; wakes the delivery threads (LISTEN ferrule_events) once the change commits.
CREATE FUNCTION events_emit (p_type text, p_integration text, p_provider text, p_diagnosis text,
                             p_generation bigint, p_detail text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (type, integration_id, provider, diagnosis, generation, detail)
        VALUES (p_type, p_integration, p_provider, p_diagnosis, p_generation, p_detail);
    PERFORM pg_notify ('ferrule_events', '');
END;
$$;

-- Events read from the chain row every state change appends, in the same statement.
CREATE FUNCTION events_from_chain () RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    i integrations%ROWTYPE;
    prev text;
    missing text;
BEGIN
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
        -- worker's rotated token overrode (docs/architecture.md)
        SELECT c.outcome INTO prev FROM token_chain c
            WHERE c.integration_id = NEW.integration_id AND c.seq < NEW.seq ORDER BY c.seq DESC LIMIT 1;
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

CREATE TRIGGER token_chain_events AFTER INSERT ON token_chain
    FOR EACH ROW
    WHEN (NEW.outcome IN ('imported', 'connected', 'disconnected', 'scope_reported', 'refreshed'))
    EXECUTE FUNCTION events_from_chain ();

-- needs_reconnect: the status change itself (an invalid_grant for a superseded generation
-- leaves the status alone, and so makes no event).
CREATE FUNCTION events_from_status () RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    diagnosis text := 'needs_reconnect';
BEGIN
    IF EXISTS (SELECT 1 FROM token_chain c WHERE c.integration_id = NEW.id AND c.generation = NEW.generation
               AND c.outcome = 'interrupted') THEN
        diagnosis := 'rotation_interrupted';
    END IF;
    PERFORM events_emit ('needs_reconnect', NEW.id, NEW.provider, diagnosis, NEW.generation,
                         left (NEW.last_error_message, 2048));
    RETURN NULL;
END;
$$;

CREATE TRIGGER integrations_events AFTER UPDATE OF status ON integrations
    FOR EACH ROW
    WHEN (NEW.status = 'needs_reconnect' AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION events_from_status ();
