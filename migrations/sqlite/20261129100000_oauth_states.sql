-- OAuth `state` values handed out by the install page, so that a callback proves it answers
-- an install this service started, in this browser, recently, and only once. Only hashes are
-- kept: the state travels in URLs, the browser nonce in a cookie; neither is stored in clear.
CREATE TABLE oauth_states (
    -- SHA-256 (hex) of the state value.
    state_hash    TEXT PRIMARY KEY,
    -- SHA-256 (hex) of the nonce in the browser's cookie that the state is bound to.
    browser_hash  TEXT NOT NULL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    expires_at    TEXT NOT NULL,
    -- Set when a callback consumed it; a state is good for one callback.
    used_at       TEXT
);

CREATE INDEX oauth_states_expires_at ON oauth_states (expires_at);
