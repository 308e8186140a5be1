-- crm-sync's own companies (issue #14). HubSpot keeps no unique key for a company: `domain` is
-- shared freely there, so here too it is NOT unique; a company's identity is its local id, its
-- HubSpot id once linked, and the external key push writes (`crm_sync_company_id`).
-- Times are TEXT, RFC 3339 UTC with milliseconds, as on contacts.
CREATE TABLE companies (
    -- AUTOINCREMENT: an id is never reused after a delete, because HubSpot may remember it.
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT,
    -- Trimmed and lower-cased by the triggers below; blank is NULL.
    domain         TEXT,
    hs_object_id   TEXT,
    -- Clock-free change tracking for push, as on contacts: local_version rises when a field
    -- the local database owns (name, domain) changes; push records what it sent.
    local_version  INTEGER NOT NULL DEFAULT 1,
    pushed_version INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- A company deleted in HubSpot leaves a tombstone, as a contact does: push never creates
    -- it again until a user restores it. All three set and cleared together.
    hubspot_deleted_at     TEXT,
    hubspot_deleted_reason TEXT
        CHECK (hubspot_deleted_reason IN
               ('deleted', 'privacy_deletion', 'merged_away_without_survivor', 'archived')),
    hubspot_deleted_id     TEXT,
    CHECK ((hubspot_deleted_at IS NULL) = (hubspot_deleted_reason IS NULL))
);

-- NULLs never collide: any number of companies may be unlinked.
CREATE UNIQUE INDEX companies_hs_object_id_key ON companies (hs_object_id);
-- Pull matches an unlinked row by domain; seed links contacts by their email's domain.
CREATE INDEX companies_domain ON companies (domain);
CREATE INDEX companies_hubspot_deleted ON companies (id) WHERE hubspot_deleted_at IS NOT NULL;

-- The domain trimmed and lower-cased for rows written by anyone, as contacts' emails are (the
-- store's connections lower-case all of Unicode). Every trigger is guarded by a WHEN that is
-- false once its work is done, so none can loop.
CREATE TRIGGER companies_normalise_domain_after_insert
AFTER INSERT ON companies
WHEN NEW.domain IS NOT NULL AND NEW.domain IS NOT NULLIF(lower(trim(NEW.domain, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '')
BEGIN
    UPDATE companies SET domain = NULLIF(lower(trim(NEW.domain, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '') WHERE id = NEW.id;
END;

CREATE TRIGGER companies_normalise_domain_after_update
AFTER UPDATE OF domain ON companies
WHEN NEW.domain IS NOT NULL AND NEW.domain IS NOT NULLIF(lower(trim(NEW.domain, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '')
BEGIN
    UPDATE companies SET domain = NULLIF(lower(trim(NEW.domain, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '') WHERE id = NEW.id;
END;

-- The version rises when an owned field really changed (domains compared normalised).
CREATE TRIGGER companies_bump_local_version
AFTER UPDATE OF name, domain ON companies
WHEN NULLIF(lower(trim(NEW.domain, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '') IS NOT NULLIF(lower(trim(OLD.domain, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '')
     OR NEW.name IS NOT OLD.name
BEGIN
    UPDATE companies SET local_version = OLD.local_version + 1 WHERE id = NEW.id;
END;

-- updated_at follows every update that did not set it itself.
CREATE TRIGGER companies_touch_updated_at
AFTER UPDATE ON companies
WHEN NEW.updated_at IS OLD.updated_at
     AND NEW.updated_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
BEGIN
    UPDATE companies SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = NEW.id;
END;

-- A contact's company (additive: a contact inserted with only email and names stays valid).
-- Deleting a company leaves its contacts without one, never deletes them.
ALTER TABLE contacts ADD COLUMN company_id INTEGER REFERENCES companies (id) ON DELETE SET NULL;
CREATE INDEX contacts_company_id ON contacts (company_id) WHERE company_id IS NOT NULL;
