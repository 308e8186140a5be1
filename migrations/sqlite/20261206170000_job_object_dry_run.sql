-- Jobs name the HubSpot object they sync and whether they are a dry run (INTERFACE §4.3).
-- Rows written before read as what they were: real contacts jobs.
ALTER TABLE sync_jobs
    ADD COLUMN object TEXT NOT NULL DEFAULT 'contacts' CHECK (object IN ('contacts', 'companies'));
ALTER TABLE sync_jobs
    ADD COLUMN dry_run BOOLEAN NOT NULL DEFAULT FALSE CHECK (dry_run IN (0, 1));

-- The "one active job" slot becomes per object, direction and dry run: a dry run must never be
-- answered with a real job (nor a real request with a dry run), and must not block a real job.
-- The database still settles the race between two requests that both find the slot free.
DROP INDEX sync_jobs_one_active_per_direction;
CREATE UNIQUE INDEX sync_jobs_one_active_per_slot ON sync_jobs (object, direction, dry_run)
    WHERE exclusive AND status IN ('queued', 'running', 'retrying');
