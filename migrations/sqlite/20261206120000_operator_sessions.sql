-- Operator sessions opened by `POST /login` with the API token. Only the SHA-256 of the
-- session cookie is kept, so a copy of the database does not yield a usable cookie. A session
-- ends when it expires or at `POST /logout` (ended_at set), whichever comes first.
CREATE TABLE operator_sessions (
    session_hash TEXT PRIMARY KEY,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    expires_at   TEXT NOT NULL,
    ended_at     TEXT
);

CREATE INDEX operator_sessions_expires_at ON operator_sessions (expires_at);

-- A state issued to the operator on the command line (`crm-sync connect`) is not bound to a
-- browser: the operator may open the link anywhere. States issued by the install page stay
-- bound to the browser that opened it.
ALTER TABLE oauth_states ADD COLUMN browser_bound BOOLEAN NOT NULL DEFAULT 1;
