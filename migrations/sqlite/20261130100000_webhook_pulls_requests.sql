-- How many times webhooks named a record while it was pending. The targeted pull clears a row
-- only if this is still the number it saw when it took the row, so that a change announced
-- while the record was being read is read again rather than cleared unread.
ALTER TABLE webhook_pulls ADD COLUMN requests INTEGER NOT NULL DEFAULT 1;
