-- HubSpot records that webhook events named (created, changed, restored, merge survivors) and
-- that still need a targeted pull. The webhook route writes them before answering HubSpot, so
-- a crash between the answer and the pull loses nothing; a pull that read them deletes them.
CREATE TABLE public.webhook_pulls (
    hs_object_id  TEXT PRIMARY KEY,
    -- When the first event still pending for this record arrived.
    requested_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX webhook_pulls_requested_at ON public.webhook_pulls (requested_at);
