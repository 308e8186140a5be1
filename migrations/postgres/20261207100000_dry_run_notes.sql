-- Dry pushes keep notes per page too (the links each page would make, so that a later page
-- refuses a HubSpot id an earlier one would have linked, as the real run's database does, and
-- a dry push stopped and resumed plans its association phase from every run's pages): the
-- table holds any dry job's notes, and its name says so.
ALTER TABLE public.dry_pull_notes RENAME TO dry_run_notes;
