//! What a dry job keeps between its pages (`dry_run_notes`), committed with each page so that a
//! dry job stopped and resumed knows what every run of it did: a full pull's notes for planning
//! the real pull's association phase, a push's links each page would make. The notes are opaque
//! JSON to the store.

use super::{Store, StoreError, Tx, on_pool, on_tx};

impl Tx {
    /// Saves the notes of page `page` of the dry job `job` (a page written again after a crash
    /// replaces its notes).
    pub async fn save_dry_notes(
        &mut self,
        job: &str,
        page: i64,
        notes: &str,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO dry_run_notes (job_id, page, notes) VALUES ($1, $2, $3)
                           ON CONFLICT (job_id, page) DO UPDATE SET notes = excluded.notes";
        on_tx!(self, c => sqlx::query(SQL).bind(job).bind(page).bind(notes).execute(c).await.map(drop)?);
        Ok(())
    }

    /// Forgets the notes of the dry job `job` (its plan is complete).
    pub async fn forget_dry_notes(&mut self, job: &str) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM dry_run_notes WHERE job_id = $1";
        on_tx!(self, c => sqlx::query(SQL).bind(job).execute(c).await.map(drop)?);
        Ok(())
    }
}

impl Store {
    /// The notes the dry job `job` saved, in page order.
    pub async fn dry_notes(&self, job: &str) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "SELECT notes FROM dry_run_notes WHERE job_id = $1 ORDER BY page";
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL).bind(job).fetch_all(pool).await)?)
    }

    /// The last page the dry job `job` saved notes for (none: no page yet).
    pub async fn last_dry_page(&self, job: &str) -> Result<Option<i64>, StoreError> {
        const SQL: &str = "SELECT MAX(page) FROM dry_run_notes WHERE job_id = $1";
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL).bind(job).fetch_one(pool).await)?)
    }
}
