-- Emails compare alike everywhere (INTERFACE §4.4): trimmed and lower-cased exactly as the
-- service does in Rust (`str::trim().to_lowercase()`) and as PostgreSQL now does.
-- The store replaces lower() on each of its connections with a Unicode one (SQLite's own folds
-- ASCII only; src/store/unicode_lower.rs), so the triggers below lower-case all of Unicode when
-- the service writes, and ASCII only under other tools. trim() strips every character Rust
-- counts as whitespace, not only ASCII's.
DROP TRIGGER contacts_normalise_email_after_insert;
DROP TRIGGER contacts_normalise_email_after_update;
DROP TRIGGER contacts_bump_local_version;

CREATE TRIGGER contacts_normalise_email_after_insert
AFTER INSERT ON contacts
WHEN NEW.email IS NOT NULL
     AND NEW.email IS NOT NULLIF(lower(trim(NEW.email, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '')
BEGIN
    UPDATE contacts
       SET email = NULLIF(lower(trim(NEW.email, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '')
     WHERE id = NEW.id;
END;

CREATE TRIGGER contacts_normalise_email_after_update
AFTER UPDATE OF email ON contacts
WHEN NEW.email IS NOT NULL
     AND NEW.email IS NOT NULLIF(lower(trim(NEW.email, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '')
BEGIN
    UPDATE contacts
       SET email = NULLIF(lower(trim(NEW.email, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '')
     WHERE id = NEW.id;
END;

CREATE TRIGGER contacts_bump_local_version
AFTER UPDATE OF email, first_name, last_name ON contacts
WHEN NULLIF(lower(trim(NEW.email, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '')
         IS NOT NULLIF(lower(trim(OLD.email, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '')
     OR NEW.first_name IS NOT OLD.first_name
     OR NEW.last_name IS NOT OLD.last_name
BEGIN
    UPDATE contacts SET local_version = OLD.local_version + 1 WHERE id = NEW.id;
END;

-- Rows stored before, with only their ASCII letters lower-cased, are normalised now, except
-- where two rows would end up with one email: those stay as they are for a person to merge,
-- rather than failing the migration. Not a local change (the version trigger compares both
-- sides normalised), so push does not see them as changed.
UPDATE contacts
   SET email = NULLIF(lower(trim(email, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '')
 WHERE email IS NOT NULLIF(lower(trim(email, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '')
   AND NULLIF(lower(trim(email, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '') IN (
        SELECT normalised
          FROM (SELECT NULLIF(lower(trim(email, char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))), '') AS normalised FROM contacts)
         GROUP BY normalised
        HAVING count(*) = 1);
