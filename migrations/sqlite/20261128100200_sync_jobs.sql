-- The service's own record of every sync job (INTERFACE §4.3). Apalis keeps the queue mechanics
-- in its Jobs table; this table keeps what users see: status, counts, errors, progress.
-- JSON columns are TEXT holding JSON; booleans are 0/1.
CREATE TABLE sync_jobs (
    -- The ULID that is also the Apalis task id.
    id            TEXT PRIMARY KEY NOT NULL,
    direction     TEXT NOT NULL CHECK (direction IN ('push', 'pull')),
    mode          TEXT NOT NULL,
    incremental   BOOLEAN NOT NULL DEFAULT FALSE CHECK (incremental IN (0, 1)),
    triggered_by  TEXT NOT NULL CHECK (triggered_by IN ('api', 'schedule', 'webhook', 'cli')),
    status        TEXT NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
    -- FALSE for a forced job, which may run beside another of its direction.
    exclusive     BOOLEAN NOT NULL DEFAULT TRUE CHECK (exclusive IN (0, 1)),
    attempts      INTEGER NOT NULL DEFAULT 0,
    portal_id     INTEGER,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    started_at    TEXT,
    finished_at   TEXT,
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    counts        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(counts)),
    errors        TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(errors)),
    -- Where a resumable job continues after a crash or retry (e.g. the HubSpot paging cursor).
    checkpoint    TEXT CHECK (checkpoint IS NULL OR json_valid(checkpoint)),
    processed     INTEGER NOT NULL DEFAULT 0,
    total         INTEGER,
    last_error    TEXT,
    CHECK ((direction = 'push' AND mode IN ('link', 'upsert'))
        OR (direction = 'pull' AND mode IN ('upsert', 'verbose')))
);

-- At most one unforced job per direction is queued, running or retrying: the database settles
-- the race between two requests that both find no active job.
CREATE UNIQUE INDEX sync_jobs_one_active_per_direction ON sync_jobs (direction)
    WHERE exclusive AND status IN ('queued', 'running', 'retrying');

CREATE INDEX sync_jobs_newest_first ON sync_jobs (created_at DESC, id DESC);
CREATE INDEX sync_jobs_by_status ON sync_jobs (status, created_at DESC);
