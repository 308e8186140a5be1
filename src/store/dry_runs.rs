//! What a dry full pull keeps between its pages (`dry_pull_notes`): the notes each page took for
//! planning the real pull's association phase, so that the plan of a dry job stopped and resumed
//! counts what every run of it read. The notes are opaque JSON to the store.

use super::{Store, StoreError, Tx, on_pool, on_tx};

impl Tx {
    /// Saves the notes of page `page` of the dry job `job` (a page written again after a crash
    /// replaces its notes).
    pub async fn save_dry_pull_notes(
        &mut self,
        job: &str,
        page: i64,
        notes: &str,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO dry_pull_notes (job_id, page, notes) VALUES ($1, $2, $3)
                           ON CONFLICT (job_id, page) DO UPDATE SET notes = excluded.notes";
        on_tx!(self, c => sqlx::query(SQL).bind(job).bind(page).bind(notes).execute(c).await.map(drop)?);
        Ok(())
    }

    /// Forgets the notes of the dry job `job` (its plan is complete).
    pub async fn forget_dry_pull_notes(&mut self, job: &str) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM dry_pull_notes WHERE job_id = $1";
        on_tx!(self, c => sqlx::query(SQL).bind(job).execute(c).await.map(drop)?);
        Ok(())
    }
}

impl Store {
    /// The notes the dry job `job` saved, in page order.
    pub async fn dry_pull_notes(&self, job: &str) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "SELECT notes FROM dry_pull_notes WHERE job_id = $1 ORDER BY page";
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL).bind(job).fetch_all(pool).await)?)
    }

    /// The last page the dry job `job` saved notes for (none: no page yet).
    pub async fn last_dry_pull_page(&self, job: &str) -> Result<Option<i64>, StoreError> {
        const SQL: &str = "SELECT MAX(page) FROM dry_pull_notes WHERE job_id = $1";
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL).bind(job).fetch_one(pool).await)?)
    }
}
