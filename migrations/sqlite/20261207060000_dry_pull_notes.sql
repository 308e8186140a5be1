-- What each page of a dry full pull noted for planning the real pull's association phase
-- (which a dry run cannot run: its pages' links are rolled back): the rows whose companies that
-- phase reads, the company each sets, and what reading the companies to adopt found, as JSON.
-- Kept page by page with the page's checkpoint, so that a dry job stopped and resumed plans
-- what every run of it read. Rows are removed when the job's plan is complete, and those of
-- jobs no longer active with the full pulls' other leftovers.
CREATE TABLE dry_pull_notes (
    job_id TEXT NOT NULL,
    page   BIGINT NOT NULL,
    notes  TEXT NOT NULL,
    PRIMARY KEY (job_id, page)
) WITHOUT ROWID;
