-- Retention prunes finished jobs by when they finished and schedule ticks by when they were
-- recorded; without these indexes each round would scan the whole table.
CREATE INDEX sync_jobs_finished_at ON sync_jobs (finished_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX schedule_ticks_recorded_at ON schedule_ticks (recorded_at);
