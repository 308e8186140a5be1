-- HubSpot OAuth credentials, one row per connected account (portal). The tokens are stored as
-- ciphertext produced by the service's encryption module; this table never sees plain tokens.
CREATE TABLE hubspot_credentials (
    portal_id             INTEGER PRIMARY KEY,
    access_token_cipher   BLOB NOT NULL,
    refresh_token_cipher  BLOB,
    expires_at            TEXT NOT NULL,
    -- Space-separated OAuth scopes, as HubSpot grants them.
    scopes                TEXT NOT NULL DEFAULT '',
    -- 'broken' once HubSpot refused the refresh token: the user must reinstall the app.
    status                TEXT NOT NULL DEFAULT 'connected' CHECK (status IN ('connected', 'broken')),
    created_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- "The current connection" is the most recently written one.
CREATE INDEX hubspot_credentials_updated_at ON hubspot_credentials (updated_at DESC, portal_id DESC);
