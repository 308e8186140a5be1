-- One webhook pull (the drain of webhook_pulls) at a time, enforced by the database.
--
-- Before: the webhook route looked for a waiting webhook pull and queued one when it found none,
-- a check-then-insert that concurrent deliveries raced (dozens ran at once). Now the route
-- inserts with ON CONFLICT DO NOTHING against this index: however many processes and
-- deliveries race, one webhook pull is queued, running or retrying. A finishing drain queues its
-- successor in the transaction that ends it when ids are still pending (docs/webhooks.md).
--
-- Older databases may hold several active webhook pulls: all but the oldest are cancelled (the
-- ids they would have read stay pending and are read by the one that remains).
UPDATE sync_jobs
   SET status = 'cancelled', finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
       updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), lease = NULL, next_attempt_at = NULL,
       last_error = 'superseded: one webhook pull drains the pending ids at a time'
 WHERE triggered_by = 'webhook'
   AND status IN ('queued', 'running', 'retrying')
   AND id <> (SELECT MIN(id) FROM sync_jobs
               WHERE triggered_by = 'webhook' AND status IN ('queued', 'running', 'retrying'));

-- One HubSpot account per database today; the index gains the account column when several are
-- served.
CREATE UNIQUE INDEX sync_jobs_one_active_webhook_pull ON sync_jobs (triggered_by)
    WHERE triggered_by = 'webhook' AND status IN ('queued', 'running', 'retrying');

-- The run (its job lease) that took a pending id to read it. Set by one atomic claim, cleared
-- with the row when the read commits, or released when a webhook named the id again meanwhile.
-- A claim whose lease no longer holds a running job (a killed worker) is free to take again.
ALTER TABLE webhook_pulls ADD COLUMN claimed_by TEXT;
