-- Queue bookkeeping for sync jobs (src/jobs). Append-only: add a new migration to change it.
--
-- delivery: the Apalis task that currently carries the job; a task with any other id is stale
--   and its delivery is ignored. lease: the run that holds the job; progress and final statuses
--   are written only under that lease, so a worker presumed dead cannot overwrite the run that
--   took over from it. next_attempt_at: when a `retrying` job runs again.
ALTER TABLE public.sync_jobs
    ADD COLUMN next_attempt_at TIMESTAMPTZ,
    ADD COLUMN delivery        TEXT,
    ADD COLUMN lease           TEXT,
    ADD COLUMN worker          TEXT,
    ADD COLUMN schedule_key    TEXT;

-- One row per schedule tick, however many processes run the scheduler: the first to insert a
-- tick acts on it (enqueues, or records `skipped`); the others find the key taken.
CREATE TABLE public.schedule_ticks (
    schedule_key TEXT NOT NULL,
    tick_at      BIGINT NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('claimed', 'queued', 'skipped')),
    job_id       TEXT,
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_key, tick_at)
);
