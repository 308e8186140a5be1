-- The service's own record of every sync job (INTERFACE §4.3). Apalis keeps the queue mechanics
-- in schema "apalis"; this table keeps what users see: status, counts, errors, progress.
CREATE TABLE public.sync_jobs (
    -- The ULID that is also the Apalis task id.
    id            TEXT PRIMARY KEY,
    direction     TEXT NOT NULL CHECK (direction IN ('push', 'pull')),
    mode          TEXT NOT NULL,
    incremental   BOOLEAN NOT NULL DEFAULT FALSE,
    triggered_by  TEXT NOT NULL CHECK (triggered_by IN ('api', 'schedule', 'webhook', 'cli')),
    status        TEXT NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
    -- FALSE for a forced job, which may run beside another of its direction.
    exclusive     BOOLEAN NOT NULL DEFAULT TRUE,
    attempts      INTEGER NOT NULL DEFAULT 0,
    portal_id     BIGINT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    counts        JSONB NOT NULL DEFAULT '{}',
    errors        JSONB NOT NULL DEFAULT '[]',
    -- Where a resumable job continues after a crash or retry (e.g. the HubSpot paging cursor).
    checkpoint    JSONB,
    processed     BIGINT NOT NULL DEFAULT 0,
    total         BIGINT,
    last_error    TEXT,
    CHECK ((direction = 'push' AND mode IN ('link', 'upsert'))
        OR (direction = 'pull' AND mode IN ('upsert', 'verbose')))
);

-- At most one unforced job per direction is queued, running or retrying: the database settles
-- the race between two requests that both find no active job.
CREATE UNIQUE INDEX sync_jobs_one_active_per_direction ON public.sync_jobs (direction)
    WHERE exclusive AND status IN ('queued', 'running', 'retrying');

CREATE INDEX sync_jobs_newest_first ON public.sync_jobs (created_at DESC, id DESC);
CREATE INDEX sync_jobs_by_status ON public.sync_jobs (status, created_at DESC);
