-- This database's installation: a random id generated once, which namespaces the external key
-- push writes to HubSpot (crm_sync_contact_id = '<installation>:<local id>'), so that two
-- databases pushing to one portal never take each other's contacts (docs/security.md).
-- One row, created here under the migration lock, so that processes starting together never
-- race to create it.
CREATE TABLE public.installation (
    singleton           BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    id                  TEXT NOT NULL CHECK (id ~ '^[a-z0-9]{8,32}$'),
    -- Earlier versions wrote the bare local id as the key. A database that had pushed before
    -- this migration (a push job, or a row marked pushed) still recognises bare keys as its own,
    -- for its rows up to this id: later rows were never pushed with a bare key. NULL (a fresh
    -- database, or one that never pushed): bare keys belong to nobody here.
    legacy_keys_through BIGINT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

INSERT INTO public.installation (id, legacy_keys_through)
SELECT substr(md5(gen_random_uuid()::text), 1, 16),
       CASE WHEN EXISTS (SELECT 1 FROM public.sync_jobs WHERE direction = 'push')
              OR EXISTS (SELECT 1 FROM public.contacts WHERE pushed_version > 0)
            THEN (SELECT max(id) FROM public.contacts)
       END;
