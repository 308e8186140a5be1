//! Generated contacts for `--contacts N` and the admin seed endpoint: plausible names,
//! unique emails, repeatable for a given seed.

use std::collections::BTreeMap;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

const FIRST: [&str; 24] = [
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Barbara",
    "Ken",
    "Margaret",
    "Dennis",
    "Radia",
    "Edsger",
    "Frances",
    "Donald",
    "Hedy",
    "John",
    "Katherine",
    "Tim",
    "Sophie",
    "Niklaus",
    "Annie",
    "Guido",
    "Shafi",
    "Bjarne",
    "Joan",
    "Leslie",
];
const LAST: [&str; 24] = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Liskov",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Perlman",
    "Dijkstra",
    "Allen",
    "Knuth",
    "Lamarr",
    "Backus",
    "Johnson",
    "Berners-Lee",
    "Wilson",
    "Wirth",
    "Easley",
    "van Rossum",
    "Goldwasser",
    "Stroustrup",
    "Clarke",
    "Lamport",
];
const COMPANIES: [&str; 8] = [
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark Industries",
    "Wayne Enterprises",
    "Soylent",
];
const DOMAINS: [&str; 4] = [
    "example.com",
    "example.org",
    "example.net",
    "mail.example.com",
];

/// A repeatable source of contacts.
#[derive(Debug)]
pub(crate) struct ContactGenerator {
    rng: ChaCha8Rng,
    serial: u64,
}

impl ContactGenerator {
    /// Generator for a seed.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            serial: 0,
        }
    }

    /// The generator for `seed` after it made `made` contacts (a resumed sandbox goes on
    /// where it stopped, so that seeding again never repeats an email).
    pub(crate) fn resumed(seed: u64, made: u64) -> Self {
        let mut generator = Self::new(seed);
        for _ in 0..made {
            generator.one();
        }
        generator
    }

    /// How many contacts it made.
    pub(crate) fn made(&self) -> u64 {
        self.serial
    }

    /// The next `n` contacts' property values.
    pub(crate) fn take(&mut self, n: usize) -> Vec<BTreeMap<String, String>> {
        (0..n).map(|_| self.one()).collect()
    }

    fn one(&mut self) -> BTreeMap<String, String> {
        self.serial += 1;
        let first = FIRST[self.rng.random_range(0..FIRST.len())];
        let last = LAST[self.rng.random_range(0..LAST.len())];
        let company = COMPANIES[self.rng.random_range(0..COMPANIES.len())];
        let domain = DOMAINS[self.rng.random_range(0..DOMAINS.len())];
        let local = format!("{}.{}", first, last.replace(' ', "")).to_lowercase();
        let mut v = BTreeMap::new();
        v.insert("firstname".to_owned(), first.to_owned());
        v.insert("lastname".to_owned(), last.to_owned());
        // The serial keeps emails unique however the names fall.
        v.insert(
            "email".to_owned(),
            format!("{local}.{}@{domain}", self.serial),
        );
        v.insert("company".to_owned(), company.to_owned());
        v.insert(
            "phone".to_owned(),
            format!("+1-555-{:04}", self.rng.random_range(0..10_000)),
        );
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_contacts() {
        assert_eq!(
            ContactGenerator::new(7).take(20),
            ContactGenerator::new(7).take(20)
        );
        assert_ne!(
            ContactGenerator::new(7).take(20),
            ContactGenerator::new(8).take(20)
        );
    }
}
