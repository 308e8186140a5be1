-- HubSpot records that webhook events named (created, changed, restored, merge survivors) and
-- that still need a targeted pull. The webhook route writes them before answering HubSpot, so
-- a crash between the answer and the pull loses nothing; a pull that read them deletes them.
CREATE TABLE webhook_pulls (
    hs_object_id  TEXT PRIMARY KEY,
    -- When the first event still pending for this record arrived.
    requested_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX webhook_pulls_requested_at ON webhook_pulls (requested_at);
