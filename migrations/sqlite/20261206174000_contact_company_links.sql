-- The contact→company association as crm-sync last synced it (issue #14): per contact, the
-- HubSpot company it last wrote as the contact's primary company, or last accepted from
-- HubSpot. Comparing it with the HubSpot id of `contacts.company_id` tells push what changed
-- locally (archive the old pair, create the new one) and pull what changed in HubSpot. No
-- row: no association synced yet. Written in the same transaction as the page that made it.
CREATE TABLE contact_company_links (
    contact_id    INTEGER PRIMARY KEY REFERENCES contacts (id) ON DELETE CASCADE,
    hs_company_id TEXT NOT NULL,
    synced_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
