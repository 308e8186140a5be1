-- Queue bookkeeping for sync jobs (src/jobs). Append-only: add a new migration to change it.
--
-- delivery: the Apalis task that currently carries the job; a task with any other id is stale
--   and its delivery is ignored. lease: the run that holds the job; progress and final statuses
--   are written only under that lease, so a worker presumed dead cannot overwrite the run that
--   took over from it. next_attempt_at: when a `retrying` job runs again.
ALTER TABLE sync_jobs ADD COLUMN next_attempt_at TEXT;
ALTER TABLE sync_jobs ADD COLUMN delivery TEXT;
ALTER TABLE sync_jobs ADD COLUMN lease TEXT;
ALTER TABLE sync_jobs ADD COLUMN worker TEXT;
ALTER TABLE sync_jobs ADD COLUMN schedule_key TEXT;

-- One row per schedule tick, however many processes run the scheduler: the first to insert a
-- tick acts on it (enqueues, or records `skipped`); the others find the key taken.
CREATE TABLE schedule_ticks (
    schedule_key TEXT NOT NULL,
    tick_at      INTEGER NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('claimed', 'queued', 'skipped')),
    job_id       TEXT,
    recorded_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (schedule_key, tick_at)
);
