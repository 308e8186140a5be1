//! The vocabularies seeded contacts are drawn from: the `seed-data/*.toml` files.
//!
//! The files are embedded in the binary (`include_str!`), so `crm-sync seed` works from any
//! folder. When the working directory has a `seed-data/` folder, its `*.toml` files take
//! precedence file by file: one named like an embedded file replaces it, a new one adds an
//! industry named after the file. Users can thus add or adjust an industry without rebuilding
//! (see `seed-data/README.md`). Every file is checked on load, so a bad one is reported by name
//! instead of producing odd contacts.

use super::SeedError;
use super::ascii::{NameError, ascii_slug};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The folder looked for in the working directory, and the folder the embedded files come from.
const SEED_DATA_DIR: &str = "seed-data";
/// The file holding the given and family names every industry shares.
const NAMES_FILE: &str = "names.toml";

/// The vocabularies compiled into the binary: (file name, contents).
const EMBEDDED: &[(&str, &str)] = &[
    (NAMES_FILE, include_str!("../../seed-data/names.toml")),
    (
        "education.toml",
        include_str!("../../seed-data/education.toml"),
    ),
    ("finance.toml", include_str!("../../seed-data/finance.toml")),
    (
        "healthcare.toml",
        include_str!("../../seed-data/healthcare.toml"),
    ),
    (
        "manufacturing.toml",
        include_str!("../../seed-data/manufacturing.toml"),
    ),
    ("retail.toml", include_str!("../../seed-data/retail.toml")),
    ("saas.toml", include_str!("../../seed-data/saas.toml")),
];

/// Top-level TLDs and domains reserved by RFC 2606/6761: never deliverable, and HubSpot rejects
/// emails on them as invalid, so a vocabulary must not use them.
const RESERVED_TLDS: &[&str] = &[
    "test",
    "example",
    "invalid",
    "localhost",
    "local",
    "internal",
];
/// Second-level names reserved under every common TLD (`example.com`, `example.org`, ...).
const RESERVED_SECOND_LEVEL: &[&str] = &["example"];

/// `names.toml`: the people, shared by every industry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamesFile {
    first_names: Vec<String>,
    last_names: Vec<String>,
}

/// `<industry>.toml`: the organisations contacts work for and the domains of their emails.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IndustryFile {
    companies: Vec<String>,
    domains: Vec<String>,
}

/// A name as displayed, with its ASCII lower-case spelling for email addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Name {
    /// As written in the vocabulary, e.g. `O'Brien`, `José`.
    pub(super) display: String,
    /// Lower-case ASCII letters and digits only, e.g. `obrien`, `jose`; never empty.
    pub(super) slug: String,
}

/// The given and family names of `names.toml`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct People {
    pub(super) first: Vec<Name>,
    pub(super) last: Vec<Name>,
}

/// One industry's vocabulary: who its contacts work for and which email domains they use.
#[derive(Debug, Clone)]
pub struct Industry {
    /// The file name without `.toml`, e.g. `saas`; what `--industry` takes.
    pub name: String,
    /// Organisation names of this industry.
    pub companies: Vec<String>,
    /// Email domains of this industry, lower-case, never on a reserved TLD.
    pub domains: Vec<String>,
    /// The names shared by every industry.
    pub(super) people: Arc<People>,
}

/// Every industry that can be seeded, by name.
#[derive(Debug, Clone)]
pub struct Catalog {
    industries: BTreeMap<String, Industry>,
}

/// The text of one vocabulary file and how to name it in errors.
struct SourceFile {
    label: String,
    text: String,
}

impl Catalog {
    /// Embedded vocabularies, overridden by `<dir>/seed-data/*.toml` when that folder exists.
    pub fn load(working_dir: &Path) -> Result<Catalog, SeedError> {
        let mut files: BTreeMap<String, SourceFile> = EMBEDDED
            .iter()
            .map(|(name, text)| {
                let file = SourceFile {
                    label: format!("{SEED_DATA_DIR}/{name} (built in)"),
                    text: (*text).to_owned(),
                };
                ((*name).to_owned(), file)
            })
            .collect();
        let dir = working_dir.join(SEED_DATA_DIR);
        if dir.is_dir() {
            files.extend(read_folder(&dir)?);
        }
        Catalog::from_files(files)
    }

    /// Parses and checks the files: `names.toml` plus one file per industry.
    fn from_files(mut files: BTreeMap<String, SourceFile>) -> Result<Catalog, SeedError> {
        let names = files
            .remove(NAMES_FILE)
            .ok_or_else(|| SeedError::Malformed {
                file: format!("{SEED_DATA_DIR}/{NAMES_FILE}"),
                reason: "the file is missing".to_owned(),
            })?;
        let people = Arc::new(parse_people(&names)?);
        let mut industries = BTreeMap::new();
        for (file_name, file) in &files {
            let name = industry_name(file_name, &file.label)?;
            let industry = parse_industry(name.clone(), file, &people)?;
            industries.insert(name, industry);
        }
        Ok(Catalog { industries })
    }

    /// The industry names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.industries.keys().map(String::as_str).collect()
    }

    /// The industry called `name`; an unknown name is an error listing the valid ones.
    pub fn industry(&self, name: &str) -> Result<&Industry, SeedError> {
        self.industries
            .get(name)
            .ok_or_else(|| SeedError::UnknownIndustry {
                name: name.to_owned(),
                valid: self.names().into_iter().map(str::to_owned).collect(),
            })
    }
}

/// The `*.toml` files of a `seed-data/` folder, by file name; other files (README) are ignored.
fn read_folder(dir: &Path) -> Result<Vec<(String, SourceFile)>, SeedError> {
    let read_error = |source| SeedError::ReadFile {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if path.extension().is_none_or(|ext| ext != "toml") {
            continue;
        }
        let label = path.display().to_string();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            return Err(SeedError::Malformed {
                file: label,
                reason: "the file name is not valid UTF-8".to_owned(),
            });
        };
        let file_name = file_name.to_owned();
        let text = std::fs::read_to_string(&path)
            .map_err(|source| SeedError::ReadFile { path, source })?;
        files.push((file_name, SourceFile { label, text }));
    }
    Ok(files)
}

/// `saas.toml` → `saas`. Names are what users type after `--industry`, so keep them simple.
fn industry_name(file_name: &str, label: &str) -> Result<String, SeedError> {
    let name = file_name.strip_suffix(".toml").unwrap_or(file_name);
    let simple = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if simple {
        Ok(name.to_owned())
    } else {
        Err(malformed(
            label,
            "an industry file must be named with lower-case letters, digits, '-' or '_' (e.g. biotech.toml)",
        ))
    }
}

fn parse_people(file: &SourceFile) -> Result<People, SeedError> {
    let parsed: NamesFile =
        toml::from_str(&file.text).map_err(|e| malformed(&file.label, e.to_string().trim()))?;
    Ok(People {
        first: parse_names(&parsed.first_names, "first_names", &file.label)?,
        last: parse_names(&parsed.last_names, "last_names", &file.label)?,
    })
}

fn parse_names(raw: &[String], key: &str, label: &str) -> Result<Vec<Name>, SeedError> {
    if raw.is_empty() {
        return Err(malformed(label, &format!("`{key}` is empty")));
    }
    raw.iter()
        .map(|display| {
            let display = display.trim();
            let slug = ascii_slug(display).map_err(|e| {
                let reason = match e {
                    NameError::NoLetters => format!(
                        "{key}: {display:?} has no letters usable in an email address"
                    ),
                    NameError::Unsupported(c) => format!(
                        "{key}: {display:?} contains {c:?}, which has no ASCII spelling here; write the name in Latin letters"
                    ),
                };
                malformed(label, &reason)
            })?;
            Ok(Name {
                display: display.to_owned(),
                slug,
            })
        })
        .collect()
}

fn parse_industry(
    name: String,
    file: &SourceFile,
    people: &Arc<People>,
) -> Result<Industry, SeedError> {
    let parsed: IndustryFile =
        toml::from_str(&file.text).map_err(|e| malformed(&file.label, e.to_string().trim()))?;
    let companies: Vec<String> = parsed
        .companies
        .iter()
        .map(|c| c.trim().to_owned())
        .collect();
    if companies.is_empty() || companies.iter().any(String::is_empty) {
        return Err(malformed(
            &file.label,
            "`companies` must list at least one non-blank name",
        ));
    }
    if parsed.domains.is_empty() {
        return Err(malformed(
            &file.label,
            "`domains` must list at least one domain",
        ));
    }
    for domain in &parsed.domains {
        check_domain(domain)
            .map_err(|reason| malformed(&file.label, &format!("domain {domain:?}: {reason}")))?;
    }
    Ok(Industry {
        name,
        companies,
        domains: parsed.domains,
        people: Arc::clone(people),
    })
}

/// A domain HubSpot accepts in an email: lower-case DNS labels, not on a reserved name.
fn check_domain(domain: &str) -> Result<(), String> {
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err("needs at least one dot, e.g. acme.com".to_owned());
    }
    for label in &labels {
        let valid = !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err("use lower-case letters, digits and inner '-' between the dots".to_owned());
        }
    }
    let tld = labels[labels.len() - 1];
    let second = labels[labels.len() - 2];
    if tld.chars().all(|c| c.is_ascii_digit()) {
        return Err("the last part must be a top-level domain, not a number".to_owned());
    }
    if RESERVED_TLDS.contains(&tld) || RESERVED_SECOND_LEVEL.contains(&second) {
        return Err("reserved for testing; HubSpot rejects such emails as invalid (use e.g. .com, .io, .org)".to_owned());
    }
    Ok(())
}

fn malformed(label: &str, reason: &str) -> SeedError {
    SeedError::Malformed {
        file: label.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let folder = dir.join(SEED_DATA_DIR);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(name), text).unwrap();
    }

    fn empty_dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn every_embedded_industry_loads_with_rich_vocabularies() {
        let dir = empty_dir();
        let catalog = Catalog::load(dir.path()).unwrap();
        let names = catalog.names();
        assert_eq!(
            names,
            [
                "education",
                "finance",
                "healthcare",
                "manufacturing",
                "retail",
                "saas"
            ]
        );
        for name in names {
            let industry = catalog.industry(name).unwrap();
            assert_eq!(industry.name, name);
            assert!(industry.companies.len() >= 15, "{name}: companies");
            assert!(industry.domains.len() >= 10, "{name}: domains");
            assert!(industry.people.first.len() >= 150, "first names");
            assert!(industry.people.last.len() >= 150, "last names");
        }
    }

    #[test]
    fn names_are_spelled_in_ascii_for_emails() {
        let catalog = Catalog::load(empty_dir().path()).unwrap();
        let people = &catalog.industry("saas").unwrap().people;
        let find = |list: &[Name], display: &str| {
            list.iter()
                .find(|n| n.display == display)
                .map(|n| n.slug.clone())
        };
        assert_eq!(find(&people.first, "José").as_deref(), Some("jose"));
        assert_eq!(find(&people.last, "O'Brien").as_deref(), Some("obrien"));
        assert_eq!(
            find(&people.last, "Van der Berg").as_deref(),
            Some("vanderberg")
        );
        assert_eq!(
            find(&people.last, "Wiśniewski").as_deref(),
            Some("wisniewski")
        );
    }

    #[test]
    fn an_unknown_industry_is_an_error_listing_the_valid_ones() {
        let catalog = Catalog::load(empty_dir().path()).unwrap();
        let err = catalog.industry("aerospace").unwrap_err();
        let SeedError::UnknownIndustry { name, valid } = &err else {
            panic!("expected UnknownIndustry, got {err:?}");
        };
        assert_eq!(name, "aerospace");
        assert_eq!(valid.len(), 6);
        let message = err.to_string();
        assert!(message.contains("aerospace"), "{message}");
        for industry in catalog.names() {
            assert!(message.contains(industry), "{message} lacks {industry}");
        }
    }

    #[test]
    fn a_working_directory_seed_data_folder_overrides_and_adds_industries() {
        let dir = empty_dir();
        write(
            dir.path(),
            "saas.toml",
            "companies = [\"Tiny SaaS\"]\ndomains = [\"tinysaas.io\"]\n",
        );
        write(
            dir.path(),
            "biotech.toml",
            "companies = [\"Helix Bio\"]\ndomains = [\"helixbio.com\"]\n",
        );
        write(dir.path(), "README.md", "not a vocabulary");
        let catalog = Catalog::load(dir.path()).unwrap();
        let saas = catalog.industry("saas").unwrap();
        assert_eq!(saas.companies, ["Tiny SaaS"]);
        assert_eq!(saas.domains, ["tinysaas.io"]);
        assert_eq!(
            catalog.industry("biotech").unwrap().domains,
            ["helixbio.com"]
        );
        // the files not overridden still come from the binary
        assert!(catalog.industry("retail").unwrap().domains.len() >= 10);
        assert_eq!(catalog.names().len(), 7);
    }

    #[test]
    fn an_overriding_names_file_replaces_the_people_of_every_industry() {
        let dir = empty_dir();
        write(
            dir.path(),
            "names.toml",
            "first_names = [\"Zoë\"]\nlast_names = [\"Quinn\"]\n",
        );
        let catalog = Catalog::load(dir.path()).unwrap();
        let people = &catalog.industry("finance").unwrap().people;
        assert_eq!(people.first[0].slug, "zoe");
        assert_eq!(people.last.len(), 1);
    }

    fn load_error(file: &str, text: &str) -> String {
        let dir = empty_dir();
        write(dir.path(), file, text);
        let err = Catalog::load(dir.path()).unwrap_err();
        assert!(matches!(err, SeedError::Malformed { .. }), "{err:?}");
        err.to_string()
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_the_file() {
        let message = load_error("retail.toml", "companies = [\"Unclosed\"\n");
        assert!(message.contains("retail.toml"), "{message}");

        let message = load_error(
            "names.toml",
            "first_names = \"not a list\"\nlast_names = []\n",
        );
        assert!(message.contains("names.toml"), "{message}");
    }

    #[test]
    fn a_misspelt_key_is_reported_not_ignored() {
        let message = load_error("retail.toml", "companies = [\"A\"]\ndomain = [\"a.com\"]\n");
        assert!(
            message.contains("retail.toml") && message.contains("domain"),
            "{message}"
        );
    }

    #[test]
    fn reserved_and_invalid_domains_are_rejected() {
        for domain in [
            "acme.test",
            "acme.example",
            "example.com",
            "shop.local",
            "Acme.com",
            "acme",
        ] {
            let text = format!("companies = [\"Acme\"]\ndomains = [\"{domain}\"]\n");
            let message = load_error("retail.toml", &text);
            assert!(message.contains(domain), "{domain}: {message}");
        }
    }

    #[test]
    fn names_without_an_ascii_spelling_are_rejected() {
        let message = load_error(
            "names.toml",
            "first_names = [\"王\"]\nlast_names = [\"Li\"]\n",
        );
        assert!(
            message.contains("names.toml") && message.contains("王"),
            "{message}"
        );
    }

    #[test]
    fn oddly_named_industry_files_are_rejected() {
        let message = load_error(
            "Health Care.toml",
            "companies = [\"A\"]\ndomains = [\"a.com\"]\n",
        );
        assert!(message.contains("Health Care.toml"), "{message}");
    }
}
