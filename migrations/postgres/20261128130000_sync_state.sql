-- Small named values the sync engine keeps between jobs, e.g. the incremental pull's bookmark
-- (key 'pull.contacts.bookmark', value an RFC 3339 UTC time). Append-only: add a new
-- migration to change it.
CREATE TABLE public.sync_state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
