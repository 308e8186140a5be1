-- Emails compare alike everywhere (INTERFACE §4.4): trimmed and lower-cased exactly as the
-- service does in Rust (`str::trim().to_lowercase()`) and as SQLite now does.
-- lower() follows the collation's ctype: under a database created with the C locale it folds
-- ASCII only. So the normalisation names a collation that lower-cases all of Unicode, whatever
-- the database's locale: ICU's root locale when the server has ICU, else a libc UTF-8 one;
-- only a server with neither keeps the database's own (with a warning). The trim strips every
-- character Rust counts as whitespace (Unicode White_Space), not whatever \s means locally.
DO $migration$
DECLARE
    chosen text;
BEGIN
    SELECT c.name INTO chosen
      FROM unnest(ARRAY['und-x-icu', 'C.utf8', 'C.UTF-8', 'en_US.utf8']) WITH ORDINALITY AS c(name, n)
     WHERE EXISTS (SELECT 1 FROM pg_collation
                    WHERE collname = c.name
                      AND collencoding IN (-1, pg_char_to_encoding('UTF8')))
     ORDER BY c.n
     LIMIT 1;
    IF chosen IS NULL THEN
        RAISE WARNING 'no ICU or UTF-8 collation: emails are lower-cased with the database''s own locale';
    END IF;
    EXECUTE format($f$
        CREATE FUNCTION public.crm_normalize_email(value text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $body$
            SELECT NULLIF(lower(regexp_replace(
                value,
                '^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$',
                '', 'g') %s), '')
        $body$$f$,
        CASE WHEN chosen IS NULL THEN '' ELSE 'COLLATE ' || quote_ident(chosen) END);
END;
$migration$;

-- The trigger function of 20261128100000_contacts, normalising with the function above. The
-- version rises only when the normalised email changed, so rewriting an email into its
-- normal form (below, or by a user) is not a local change to push.
CREATE OR REPLACE FUNCTION public.contacts_before_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.email := public.crm_normalize_email(NEW.email);
    IF TG_OP = 'UPDATE' THEN
        IF NEW.email IS DISTINCT FROM public.crm_normalize_email(OLD.email)
           OR NEW.first_name IS DISTINCT FROM OLD.first_name
           OR NEW.last_name IS DISTINCT FROM OLD.last_name THEN
            NEW.local_version := OLD.local_version + 1;
        END IF;
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

-- Rows stored before under a locale that folded less are normalised now, except where two
-- rows would end up with one email: those stay as they are for a person to merge, rather than
-- failing the migration.
UPDATE public.contacts
   SET email = email
 WHERE email IS DISTINCT FROM public.crm_normalize_email(email)
   AND public.crm_normalize_email(email) IN (
        SELECT public.crm_normalize_email(email)
          FROM public.contacts
         GROUP BY 1
        HAVING count(*) = 1);
