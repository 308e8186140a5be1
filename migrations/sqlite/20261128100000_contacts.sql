-- Local contacts (INTERFACE §3). Append-only: never edit an applied migration, add a new one.
-- Times are TEXT in one fixed format, RFC 3339 UTC with milliseconds ("2026-11-28T14:03:00.123Z"),
-- so that they sort as text and decode as DateTime<Utc>.
CREATE TABLE contacts (
    -- AUTOINCREMENT: an id is never reused after a delete, because HubSpot may remember it.
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    email          TEXT,
    first_name     TEXT,
    last_name      TEXT,
    hs_object_id   TEXT,
    -- Clock-free change tracking for push: local_version rises whenever a field the local
    -- database owns (email, names) changes; push records the version it sent in pushed_version,
    -- so "changed since the last push" is local_version > pushed_version, immune to clock skew.
    local_version  INTEGER NOT NULL DEFAULT 1,
    pushed_version INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Uniqueness lives in the database, not only in code. NULLs never collide, so any number of
-- contacts may lack an email or a HubSpot id.
CREATE UNIQUE INDEX contacts_email_key ON contacts (email);
CREATE UNIQUE INDEX contacts_hs_object_id_key ON contacts (hs_object_id);

-- Email normalisation for rows written by anyone (the service, or the user's own SQL).
-- SQLite triggers cannot change NEW, so the choice was between a CHECK that refuses a
-- non-normalised email and an AFTER trigger that rewrites it. We normalise, because that is
-- what PostgreSQL does (a BEFORE trigger there), so a direct insert behaves the same on both
-- backends. A mixed-case duplicate of an existing email still cannot become a second identity:
-- the rewrite hits the unique index and the whole statement fails.
-- Limits: SQLite's lower() folds ASCII letters only, and the trim removes ASCII whitespace; the
-- service itself always writes fully normalised (Unicode lower-case) emails.
-- Every trigger is guarded by a WHEN that is false once its work is done, so none can loop
-- even if recursive_triggers were switched on (it is off by default and the service leaves it).
CREATE TRIGGER contacts_normalise_email_after_insert
AFTER INSERT ON contacts
WHEN NEW.email IS NOT NULL
     AND NEW.email IS NOT NULLIF(lower(trim(NEW.email, char(32, 9, 10, 11, 12, 13))), '')
BEGIN
    UPDATE contacts
       SET email = NULLIF(lower(trim(NEW.email, char(32, 9, 10, 11, 12, 13))), '')
     WHERE id = NEW.id;
END;

CREATE TRIGGER contacts_normalise_email_after_update
AFTER UPDATE OF email ON contacts
WHEN NEW.email IS NOT NULL
     AND NEW.email IS NOT NULLIF(lower(trim(NEW.email, char(32, 9, 10, 11, 12, 13))), '')
BEGIN
    UPDATE contacts
       SET email = NULLIF(lower(trim(NEW.email, char(32, 9, 10, 11, 12, 13))), '')
     WHERE id = NEW.id;
END;

-- The version rises when an owned field really changed. Both sides are compared normalised, so
-- neither rewriting "A@x.com" over "a@x.com" nor the normalising triggers above count as a change.
CREATE TRIGGER contacts_bump_local_version
AFTER UPDATE OF email, first_name, last_name ON contacts
WHEN NULLIF(lower(trim(NEW.email, char(32, 9, 10, 11, 12, 13))), '')
         IS NOT NULLIF(lower(trim(OLD.email, char(32, 9, 10, 11, 12, 13))), '')
     OR NEW.first_name IS NOT OLD.first_name
     OR NEW.last_name IS NOT OLD.last_name
BEGIN
    UPDATE contacts SET local_version = OLD.local_version + 1 WHERE id = NEW.id;
END;

-- updated_at follows every update that did not set it itself ('now' is fixed within a statement).
CREATE TRIGGER contacts_touch_updated_at
AFTER UPDATE ON contacts
WHEN NEW.updated_at IS OLD.updated_at
     AND NEW.updated_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
BEGIN
    UPDATE contacts SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = NEW.id;
END;
