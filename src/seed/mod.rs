//! Test data: realistic contacts of a chosen industry, repeatable from a seed (`crm-sync seed`).
//!
//! [`Catalog`] loads the vocabularies (`seed-data/*.toml`, embedded, overridable per working
//! directory), [`Generator`] draws contacts from one industry, and [`seed`] inserts exactly the
//! requested number of new ones in batches, then fills the industry's companies (each with its
//! domain, [`industry_companies`]) and gives every contact without a company the one its email's
//! domain names.

mod ascii;
mod catalog;
mod generator;

pub use catalog::{Catalog, Industry};
pub use generator::Generator;

use crate::store::{NewCompany, NewContact, Store, StoreError};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Contacts per `insert_contacts` call: large enough that statement overhead vanishes, small
/// enough for a progress bar that moves and a transaction that stays short.
const BATCH: u64 = 5_000;
/// Draws allowed per requested contact before giving up (plus [`EXTRA_DRAWS`]): repeated runs with
/// one seed replay the earlier rows first, and those collide with the emails already stored.
const DRAWS_PER_CONTACT: u64 = 20;
/// Slack for small counts, where a few collisions are a large share.
const EXTRA_DRAWS: u64 = 1_000;

/// Errors of loading vocabularies and seeding.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// No industry of that name; the message lists the valid ones.
    #[error("unknown industry \"{name}\"; valid industries: {}", valid.join(", "))]
    UnknownIndustry {
        /// The name asked for.
        name: String,
        /// Every industry the catalog has, sorted.
        valid: Vec<String>,
    },
    /// A `seed-data` folder or file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The folder or file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A vocabulary file is not valid TOML or breaks a rule (see `seed-data/README.md`).
    #[error("malformed seed-data file {file}: {reason}")]
    Malformed {
        /// Which file: its path, or `seed-data/<name> (built in)`.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// Too many generated emails already existed in the database to reach the requested count.
    #[error(
        "gave up after {draws} generated contacts: only {inserted} of {requested} were new, the rest \
         have emails already in the database; try another --rng-seed"
    )]
    Exhausted {
        /// The count asked for.
        requested: u64,
        /// How many were inserted before giving up.
        inserted: u64,
        /// How many contacts were generated.
        draws: u64,
    },
    /// The database refused an insert.
    #[error("inserting seeded contacts failed: {0}")]
    Store(#[from] StoreError),
}

/// What a [`seed`] run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedReport {
    /// New rows in `contacts`; always the requested count on success.
    pub inserted: u64,
    /// Contacts generated, including those skipped because their email already existed.
    pub generated: u64,
    /// New rows in `companies` (the industry's companies not seeded before).
    pub companies_inserted: u64,
    /// Contacts given a company by their email's domain.
    pub contacts_linked: u64,
    /// Wall time of generating and inserting.
    pub elapsed: Duration,
}

/// Inserts exactly `count` new contacts of `industry`, drawn from the stream of `seed`.
///
/// Candidates whose email already exists are skipped by the store and replaced by further draws
/// from the same stream, so seeding twice with one seed adds the next `count` rows of that
/// stream. Fails with [`SeedError::Exhausted`] after `count * 20 + 1000` draws.
/// `on_progress(inserted)` is called after each batch.
pub async fn seed(
    store: &Store,
    industry: &Industry,
    count: u64,
    seed: u64,
    mut on_progress: impl FnMut(u64),
) -> Result<SeedReport, SeedError> {
    let started = Instant::now();
    let max_draws = count
        .saturating_mul(DRAWS_PER_CONTACT)
        .saturating_add(EXTRA_DRAWS);
    let mut generator = Generator::new(industry, seed);
    let (mut inserted, mut generated) = (0, 0);
    while inserted < count {
        let size = (count - inserted).min(BATCH).min(max_draws - generated);
        if size == 0 {
            return Err(SeedError::Exhausted {
                requested: count,
                inserted,
                draws: generated,
            });
        }
        let batch: Vec<NewContact> = (0..size).map(|_| generator.next_contact()).collect();
        generated += size;
        // At most `size` rows go in, so `inserted` never passes `count`.
        inserted += store.insert_contacts(&batch).await?;
        on_progress(inserted);
    }
    let companies_inserted = store
        .insert_missing_companies(&industry_companies(industry))
        .await?;
    let contacts_linked = store.link_contacts_to_companies_by_email_domain().await?;
    Ok(SeedReport {
        inserted,
        generated,
        companies_inserted,
        contacts_linked,
        elapsed: started.elapsed(),
    })
}

/// The industry's companies, each with the email domain that is its own: the domain whose
/// name (before the first dot) is the start of the company's name with spaces and punctuation
/// removed ("Keystone CRM" → `keystonecrm.com`, "Driftwell Software" → `driftwell.io`), or
/// the other way round. Domains no name claims go, in catalog order, to the companies still
/// without one; companies left over have no domain. Deterministic, so seeding again finds the
/// same companies (and inserts none twice).
pub fn industry_companies(industry: &Industry) -> Vec<NewCompany> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let mut free: Vec<&str> = industry.domains.iter().map(String::as_str).collect();
    let mut domains: Vec<Option<String>> = industry
        .companies
        .iter()
        .map(|name| {
            let name = squash(name);
            let pos = free.iter().position(|domain| {
                let label = squash(domain.split('.').next().unwrap_or(domain));
                !label.is_empty() && (name.starts_with(&label) || label.starts_with(&name))
            })?;
            Some(free.remove(pos).to_owned())
        })
        .collect();
    let mut leftovers = free.into_iter();
    for slot in domains.iter_mut().filter(|d| d.is_none()) {
        *slot = leftovers.next().map(str::to_owned);
    }
    industry
        .companies
        .iter()
        .zip(domains)
        .map(|(name, domain)| NewCompany {
            name: Some(name.clone()),
            domain,
        })
        .collect()
}
