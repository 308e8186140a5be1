-- What a pending webhook read is about: a HubSpot contact to read ('contact', every row so
-- far), a company to read ('company'), or a contact whose company associations to read
-- ('contact_associations'). HubSpot ids are unique per object type only, so the object is
-- part of the key: a contact and a company with the same id are two pending reads, never one.
-- SQLite cannot change a primary key in place: the table is rebuilt with its rows.
CREATE TABLE webhook_pulls_by_object (
    object        TEXT NOT NULL DEFAULT 'contact'
                  CHECK (object IN ('contact', 'company', 'contact_associations')),
    hs_object_id  TEXT NOT NULL,
    requested_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    requests      INTEGER NOT NULL DEFAULT 1,
    claimed_by    TEXT,
    PRIMARY KEY (object, hs_object_id)
);
INSERT INTO webhook_pulls_by_object (object, hs_object_id, requested_at, requests, claimed_by)
    SELECT 'contact', hs_object_id, requested_at, requests, claimed_by FROM webhook_pulls;
DROP TABLE webhook_pulls;
ALTER TABLE webhook_pulls_by_object RENAME TO webhook_pulls;
CREATE INDEX webhook_pulls_requested_at ON webhook_pulls (requested_at);
