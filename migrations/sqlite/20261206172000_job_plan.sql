-- A dry run's plan: the HubSpot calls the real run would make and what it would do to each
-- record (capped). NULL for real jobs.
ALTER TABLE sync_jobs ADD COLUMN plan TEXT CHECK (plan IS NULL OR json_valid(plan));
