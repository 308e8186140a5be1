//! Plausible contacts, repeatable from a seed.
//!
//! ChaCha8 rather than `StdRng`: its output for a seed is fixed by the algorithm's name, while
//! `StdRng` may change between rand releases, and "the same seed gives the same rows" is a
//! promise to users. Every value is drawn in a fixed order, so row N depends only on the seed and
//! the industry's vocabulary.

use super::catalog::{Industry, Name, People};
use crate::store::NewContact;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::collections::HashSet;
use std::sync::Arc;

/// Share of contacts without an email, as in real CRMs (leads from calls, events, imports).
const NO_EMAIL_SHARE: f64 = 0.03;

/// How a company builds its addresses, with the weight (out of 100) it is drawn with.
#[derive(Debug, Clone, Copy)]
enum Pattern {
    /// `jane.doe`
    FirstDotLast,
    /// `jdoe`
    InitialLast,
    /// `jane_doe42`
    FirstUnderscoreLastNumber,
    /// `janedoe`
    FirstLast,
    /// `j.doe`
    InitialDotLast,
    /// `jane`, common at small companies
    First,
    /// `doe.jane`
    LastDotFirst,
}

const PATTERNS: &[(Pattern, u32)] = &[
    (Pattern::FirstDotLast, 40),
    (Pattern::InitialLast, 20),
    (Pattern::FirstUnderscoreLastNumber, 10),
    (Pattern::FirstLast, 10),
    (Pattern::InitialDotLast, 8),
    (Pattern::First, 6),
    (Pattern::LastDotFirst, 6),
];

/// Draws contacts of one industry; the same industry and seed give the same sequence.
/// Emails are lower-case ASCII and unique within one generator.
pub struct Generator {
    rng: ChaCha8Rng,
    people: Arc<People>,
    domains: Vec<String>,
    used: HashSet<String>,
}

impl Generator {
    /// A generator for `industry` whose whole sequence is determined by `seed`.
    pub fn new(industry: &Industry, seed: u64) -> Self {
        Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            people: Arc::clone(&industry.people),
            domains: industry.domains.clone(),
            used: HashSet::new(),
        }
    }

    /// The next contact: names always, an email unless it falls in the ~3 % without one.
    pub fn next_contact(&mut self) -> NewContact {
        let people = Arc::clone(&self.people);
        let first = self.pick(&people.first);
        let last = self.pick(&people.last);
        let email = if self.rng.random_bool(NO_EMAIL_SHARE) {
            None
        } else {
            Some(self.unique_email(first, last))
        };
        NewContact {
            email,
            first_name: Some(first.display.clone()),
            last_name: Some(last.display.clone()),
        }
    }

    /// One element of a non-empty list (the catalog guarantees non-empty lists).
    fn pick<'a>(&mut self, list: &'a [Name]) -> &'a Name {
        &list[self.rng.random_range(0..list.len())]
    }

    /// An address not yet produced by this generator: the pattern's address when free,
    /// otherwise with a number appended, as mail admins do for namesakes.
    fn unique_email(&mut self, first: &Name, last: &Name) -> String {
        let domain_index = self.rng.random_range(0..self.domains.len());
        let local = self.local_part(first, last);
        let domain = &self.domains[domain_index];
        let candidate = format!("{local}@{domain}");
        if self.used.insert(candidate.clone()) {
            return candidate;
        }
        // Widen the range as attempts fail, so even a tiny vocabulary always finds a free one.
        let mut upper: u64 = 100;
        loop {
            let n = self.rng.random_range(2..upper);
            let candidate = format!("{local}{n}@{domain}");
            if self.used.insert(candidate.clone()) {
                return candidate;
            }
            upper = upper.saturating_mul(2);
        }
    }

    fn local_part(&mut self, first: &Name, last: &Name) -> String {
        let (f, l) = (first.slug.as_str(), last.slug.as_str());
        let initial = &f[..1]; // slugs are non-empty ASCII
        match self.pattern() {
            Pattern::FirstDotLast => format!("{f}.{l}"),
            Pattern::InitialLast => format!("{initial}{l}"),
            Pattern::FirstUnderscoreLastNumber => {
                let n = self.rng.random_range(1..100);
                format!("{f}_{l}{n}")
            }
            Pattern::FirstLast => format!("{f}{l}"),
            Pattern::InitialDotLast => format!("{initial}.{l}"),
            Pattern::First => f.to_owned(),
            Pattern::LastDotFirst => format!("{l}.{f}"),
        }
    }

    fn pattern(&mut self) -> Pattern {
        let total: u32 = PATTERNS.iter().map(|(_, weight)| weight).sum();
        let mut roll = self.rng.random_range(0..total);
        for &(pattern, weight) in PATTERNS {
            if roll < weight {
                return pattern;
            }
            roll -= weight;
        }
        Pattern::FirstDotLast
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::Catalog;

    fn catalog() -> Catalog {
        Catalog::load(tempfile::tempdir().unwrap().path()).unwrap()
    }

    fn draw(industry: &Industry, seed: u64, n: usize) -> Vec<NewContact> {
        let mut generator = Generator::new(industry, seed);
        (0..n).map(|_| generator.next_contact()).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_contacts() {
        let catalog = catalog();
        let saas = catalog.industry("saas").unwrap();
        assert_eq!(draw(saas, 42, 2_000), draw(saas, 42, 2_000));
    }

    #[test]
    fn different_seeds_give_mostly_different_contacts() {
        let catalog = catalog();
        let retail = catalog.industry("retail").unwrap();
        let a = draw(retail, 1, 1_000);
        let b = draw(retail, 2, 1_000);
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same < 10, "{same} of 1000 rows equal across seeds");
    }

    #[test]
    fn a_hundred_thousand_emails_are_unique_lower_case_ascii_on_the_industry_domains() {
        let catalog = catalog();
        let health = catalog.industry("healthcare").unwrap();
        let contacts = draw(health, 7, 100_000);
        let emails: Vec<&str> = contacts.iter().filter_map(|c| c.email.as_deref()).collect();
        let unique: HashSet<&str> = emails.iter().copied().collect();
        assert_eq!(unique.len(), emails.len(), "duplicate emails");
        for email in &emails {
            let (local, domain) = email.split_once('@').expect("one @");
            assert!(
                !local.is_empty()
                    && local
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._".contains(c)),
                "{email}"
            );
            assert!(health.domains.iter().any(|d| d == domain), "{email}");
        }
    }

    #[test]
    fn about_three_percent_have_no_email() {
        let catalog = catalog();
        let finance = catalog.industry("finance").unwrap();
        let contacts = draw(finance, 3, 100_000);
        let without = contacts.iter().filter(|c| c.email.is_none()).count();
        let share = without as f64 / contacts.len() as f64;
        assert!((0.02..=0.04).contains(&share), "{share} without email");
    }

    #[test]
    fn every_contact_has_names_from_the_vocabulary() {
        let catalog = catalog();
        let education = catalog.industry("education").unwrap();
        for contact in draw(education, 9, 1_000) {
            let first = contact.first_name.expect("first name");
            let last = contact.last_name.expect("last name");
            assert!(education.people.first.iter().any(|n| n.display == first));
            assert!(education.people.last.iter().any(|n| n.display == last));
        }
    }

    #[test]
    fn a_tiny_vocabulary_still_yields_unique_emails() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("seed-data");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(
            folder.join("names.toml"),
            "first_names = [\"Ann\"]\nlast_names = [\"Lee\"]\n",
        )
        .unwrap();
        let catalog = Catalog::load(dir.path()).unwrap();
        let tiny = catalog.industry("saas").unwrap();
        let contacts = draw(tiny, 5, 5_000);
        let emails: HashSet<_> = contacts.iter().filter_map(|c| c.email.clone()).collect();
        assert_eq!(
            emails.len(),
            contacts.iter().filter(|c| c.email.is_some()).count()
        );
    }
}
