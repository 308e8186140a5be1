-- A contact deleted in HubSpot leaves a tombstone on its local row (INTERFACE §4.4): when, why
-- and which HubSpot record it was. The row's own data stays (the local database owns it); push
-- never creates a tombstoned contact again, until a user restores it. All three columns are set
-- together and cleared together.
ALTER TABLE public.contacts
    ADD COLUMN hubspot_deleted_at     TIMESTAMPTZ,
    ADD COLUMN hubspot_deleted_reason TEXT
        CHECK (hubspot_deleted_reason IN
               ('deleted', 'privacy_deletion', 'merged_away_without_survivor', 'archived')),
    ADD COLUMN hubspot_deleted_id     TEXT,
    ADD CONSTRAINT contacts_tombstone_whole
        CHECK ((hubspot_deleted_at IS NULL) = (hubspot_deleted_reason IS NULL));

-- Tombstoned rows are few: listing and counting them reads this small index, never the table.
CREATE INDEX contacts_hubspot_deleted ON public.contacts (id) WHERE hubspot_deleted_at IS NOT NULL;

-- The HubSpot ids a full pull has read, per job: after its last page, the linked rows whose id
-- it did not see are checked with HubSpot (deletions no webhook reported). Rows are removed
-- when the job's sweep ends.
CREATE TABLE public.pull_seen (
    job_id       TEXT NOT NULL,
    hs_object_id TEXT NOT NULL,
    PRIMARY KEY (job_id, hs_object_id)
);
