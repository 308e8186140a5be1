-- HubSpot OAuth credentials, one row per connected account (portal). The tokens are stored as
-- ciphertext produced by the service's encryption module; this table never sees plain tokens.
CREATE TABLE public.hubspot_credentials (
    portal_id             BIGINT PRIMARY KEY,
    access_token_cipher   BYTEA NOT NULL,
    refresh_token_cipher  BYTEA,
    expires_at            TIMESTAMPTZ NOT NULL,
    -- Space-separated OAuth scopes, as HubSpot grants them.
    scopes                TEXT NOT NULL DEFAULT '',
    -- 'broken' once HubSpot refused the refresh token: the user must reinstall the app.
    status                TEXT NOT NULL DEFAULT 'connected' CHECK (status IN ('connected', 'broken')),
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- "The current connection" is the most recently written one.
CREATE INDEX hubspot_credentials_updated_at ON public.hubspot_credentials (updated_at DESC, portal_id DESC);
