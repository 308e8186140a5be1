-- This database's installation: a random id generated once, which namespaces the external key
-- push writes to HubSpot (crm_sync_contact_id = '<installation>:<local id>'), so that two
-- databases pushing to one portal never take each other's contacts (docs/security.md).
-- One row, created here under the migration lock, so that processes starting together never
-- race to create it.
CREATE TABLE installation (
    singleton           INTEGER PRIMARY KEY CHECK (singleton = 1),
    id                  TEXT NOT NULL CHECK (length(id) BETWEEN 8 AND 32 AND id NOT GLOB '*[^a-z0-9]*'),
    -- Earlier versions wrote the bare local id as the key. A database that had pushed before
    -- this migration (a push job, or a row marked pushed) still recognises bare keys as its own,
    -- for its rows up to this id: later rows were never pushed with a bare key. NULL (a fresh
    -- database, or one that never pushed): bare keys belong to nobody here.
    legacy_keys_through INTEGER,
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- singleton is an alias of the rowid (a DEFAULT would never apply): always write it.
INSERT INTO installation (singleton, id, legacy_keys_through)
SELECT 1,
       lower(hex(randomblob(8))),
       CASE WHEN EXISTS (SELECT 1 FROM sync_jobs WHERE direction = 'push')
              OR EXISTS (SELECT 1 FROM contacts WHERE pushed_version > 0)
            THEN (SELECT max(id) FROM contacts)
       END;
