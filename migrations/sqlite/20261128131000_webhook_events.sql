-- HubSpot webhook events already received, so that a redelivered event is processed once.
-- HubSpot redelivers an event unchanged but for attemptNumber, and does not promise that
-- eventId is unique, so the key is a SHA-256 (hex) over what identifies an event: portal,
-- event id, subscription, object, time and the change itself, computed by the service.
-- Rows only need to outlive HubSpot's retry window (24 hours); old ones are pruned.
CREATE TABLE webhook_events (
    dedupe_key         TEXT PRIMARY KEY,
    portal_id          INTEGER NOT NULL,
    event_id           TEXT NOT NULL,
    subscription_type  TEXT NOT NULL,
    object_id          TEXT,
    -- HubSpot's occurredAt, milliseconds since the epoch, as sent.
    occurred_at_ms     INTEGER NOT NULL,
    received_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX webhook_events_received_at ON webhook_events (received_at);
