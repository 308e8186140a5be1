-- The sync state of records in tables crm-sync does not own (a `[[sync.objects]]` mapping to a
-- user's table): one row per (object, local key), so the user's table gets no trigger and no
-- column. `hs_object_id` is the linked HubSpot record (unique per object when set; NULL when the
-- mapping keeps the id in a column of the user's table); `pushed_hash` is the hash of the mapped
-- values last pushed (a row whose hash differs is a push candidate); `synced_values` is a JSON
-- object, property -> the value both sides last agreed on (which side changed since); a record
-- deleted in HubSpot is marked (`hubspot_deleted_at`) and never created again by a push.
CREATE TABLE public.object_links (
    object             TEXT NOT NULL CHECK (object IN ('contacts', 'companies')),
    local_key          TEXT NOT NULL,
    hs_object_id       TEXT,
    pushed_hash        TEXT,
    synced_values      TEXT NOT NULL DEFAULT '{}',
    hubspot_deleted_at TIMESTAMPTZ,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (object, local_key)
);

CREATE UNIQUE INDEX object_links_hubspot_id ON public.object_links (object, hs_object_id)
    WHERE hs_object_id IS NOT NULL;
