-- Operator sessions opened by `POST /login` with the API token. Only the SHA-256 of the
-- session cookie is kept, so a copy of the database does not yield a usable cookie. A session
-- ends when it expires or at `POST /logout` (ended_at set), whichever comes first.
CREATE TABLE public.operator_sessions (
    session_hash TEXT PRIMARY KEY,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    ended_at     TIMESTAMPTZ
);

CREATE INDEX operator_sessions_expires_at ON public.operator_sessions (expires_at);

-- A state issued to the operator on the command line (`crm-sync connect`) is not bound to a
-- browser: the operator may open the link anywhere. States issued by the install page stay
-- bound to the browser that opened it.
ALTER TABLE public.oauth_states ADD COLUMN browser_bound BOOLEAN NOT NULL DEFAULT TRUE;
