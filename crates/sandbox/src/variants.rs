//! Where HubSpot's documentation leaves an answer open, the sandbox can play each way real
//! HubSpot is documented or reported to answer (INTERFACE §5). Every choice defaults to the
//! sandbox's original behaviour; `crm-sync sandbox` flags, [`crate::SandboxArgs`]
//! and `PUT /_sandbox/config` pick the others.

use std::sync::Mutex;

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// How a batch write answers inputs whose email or unique value another record (or an earlier
/// input of the same batch) already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictReport {
    /// The whole batch is refused with one 409 naming only the first clash; nothing is applied.
    #[default]
    WholeBatch,
    /// Each clashing input fails alone in a 207 (with its `objectWriteTraceId`) and the others
    /// are applied: batch create and update when every input carries a trace id, batch upsert
    /// always (as it reports invalid inputs).
    PerInput,
}

/// How batch read and batch update answer ids that are unknown, archived or merged away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MissingIds {
    /// A 207 with one `OBJECT_NOT_FOUND` error listing them; except that batch read of a
    /// merged-away id returns the survivor and batch update of one leaves it out silently.
    #[default]
    Reported,
    /// Left out of `results` without any error (a 200), merged-away ids included.
    Omitted,
    /// Like `reported`, and batch update of a merged-away id is an `OBJECT_NOT_FOUND` error too.
    AllReported,
}

/// How many bad values a 400 `VALIDATION_ERROR` (or a per-input validation error) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ValidationReport {
    /// Every invalid value (and every duplicated id).
    #[default]
    Every,
    /// Only the first, in input order and then property-name order.
    First,
}

/// How a requested property without a value appears in a record's `properties`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EmptyValues {
    /// Left out of `properties`.
    #[default]
    Omitted,
    /// Present as JSON `null`.
    Null,
}

/// Whether search results carry `lastmodifieddate` (reported to come back `null`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SearchModified {
    /// With its value.
    #[default]
    Returned,
    /// As JSON `null`.
    Null,
    /// Left out of `properties`.
    Omitted,
}

/// The order of `results` in batch answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ResultOrder {
    /// The order of the inputs.
    #[default]
    Input,
    /// Shuffled, repeatably for `--rng-seed` (from a random stream of its own, so the fault
    /// dice draw exactly as without it).
    Shuffled,
}

/// One answer for each open choice; `Variants::default()` is the sandbox's original behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Variants of HubSpot's answers")]
pub struct Variants {
    /// Batch writes hitting an existing email or unique value.
    #[arg(long, value_enum, default_value_t = ConflictReport::WholeBatch)]
    pub conflicts: ConflictReport,
    /// Batch read / update of unknown, archived or merged-away ids.
    #[arg(long, value_enum, default_value_t = MissingIds::Reported)]
    pub missing_ids: MissingIds,
    /// How many invalid values a validation error names.
    #[arg(long, value_enum, default_value_t = ValidationReport::Every)]
    pub validation: ValidationReport,
    /// Requested properties without a value: left out or `null`.
    #[arg(long, value_enum, default_value_t = EmptyValues::Omitted)]
    pub empty_values: EmptyValues,
    /// `lastmodifieddate` in search results: returned, `null` or left out.
    #[arg(long, value_enum, default_value_t = SearchModified::Returned)]
    pub search_modified: SearchModified,
    /// Batch results in input order or shuffled.
    #[arg(long, value_enum, default_value_t = ResultOrder::Input)]
    pub result_order: ResultOrder,
}

impl Variants {
    /// Every non-default answer at once (for `missing_ids`: `omitted`; for `search_modified`:
    /// `null`, as reported for HubSpot).
    pub fn alternative() -> Self {
        Self {
            conflicts: ConflictReport::PerInput,
            missing_ids: MissingIds::Omitted,
            validation: ValidationReport::First,
            empty_values: EmptyValues::Null,
            search_modified: SearchModified::Null,
            result_order: ResultOrder::Shuffled,
        }
    }

    /// These variants with the given fields changed.
    pub fn patched(self, patch: VariantsPatch) -> Self {
        Self {
            conflicts: patch.conflicts.unwrap_or(self.conflicts),
            missing_ids: patch.missing_ids.unwrap_or(self.missing_ids),
            validation: patch.validation.unwrap_or(self.validation),
            empty_values: patch.empty_values.unwrap_or(self.empty_values),
            search_modified: patch.search_modified.unwrap_or(self.search_modified),
            result_order: patch.result_order.unwrap_or(self.result_order),
        }
    }
}

/// Some fields of [`Variants`] (the body of `PUT /_sandbox/config`); unknown fields are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantsPatch {
    /// See [`Variants::conflicts`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<ConflictReport>,
    /// See [`Variants::missing_ids`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_ids: Option<MissingIds>,
    /// See [`Variants::validation`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationReport>,
    /// See [`Variants::empty_values`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_values: Option<EmptyValues>,
    /// See [`Variants::search_modified`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_modified: Option<SearchModified>,
    /// See [`Variants::result_order`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_order: Option<ResultOrder>,
}

/// How reads name a company by `domain` (`?idProperty=domain`, batch read): HubSpot's guide
/// implies they work, integrators report them unreliable, and since `domain` is not unique the
/// same rejection as for upserts is expected too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DomainLookup {
    /// The oldest live company with that domain (case-insensitive).
    #[default]
    Oldest,
    /// 400 "Unable to perform update/upsert by non-unique 0-2 property domain".
    Refused,
}

/// Which id a company merge leaves: HubSpot's merge webhook has a `newObjectId` because the
/// result can get a new id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MergeIds {
    /// The result keeps the primary's id (`newObjectId` = `primaryObjectId`).
    #[default]
    KeepPrimary,
    /// The result is a new record with a new id; both old ids resolve to it.
    NewId,
}

/// The label association reads show for the primary type (1 contact→company, 2
/// company→contact): the docs' example says "Primary", HubSpot renamed it on 2024-02-19.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PrimaryLabel {
    /// "Primary".
    #[default]
    Primary,
    /// "Contact with Primary Company" (contact→company) and "Primary Company"
    /// (company→contact).
    Renamed,
}

impl PrimaryLabel {
    /// The label text from the contact's side (`true`) or the company's.
    pub(crate) fn text(self, from_contact: bool) -> &'static str {
        match (self, from_contact) {
            (Self::Primary, _) => "Primary",
            (Self::Renamed, true) => "Contact with Primary Company",
            (Self::Renamed, false) => "Primary Company",
        }
    }
}

/// One answer for each open choice about companies and associations (kept apart from
/// [`Variants`], whose set and admin document stay as they were); the default is what HubSpot's
/// docs say or imply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Variants of HubSpot's answers about companies and associations")]
pub struct CompanyVariants {
    /// Reads of a company by `idProperty=domain`: the oldest match or refused.
    #[arg(long, value_enum, default_value_t = DomainLookup::Oldest)]
    pub domain_lookup: DomainLookup,
    /// Company merges: the result keeps the primary's id or gets a new one.
    #[arg(long, value_enum, default_value_t = MergeIds::KeepPrimary)]
    pub merge_ids: MergeIds,
    /// The label text of the primary association type.
    #[arg(long, value_enum, default_value_t = PrimaryLabel::Primary)]
    pub primary_label: PrimaryLabel,
}

impl CompanyVariants {
    /// Every non-default answer at once.
    pub fn alternative() -> Self {
        Self {
            domain_lookup: DomainLookup::Refused,
            merge_ids: MergeIds::NewId,
            primary_label: PrimaryLabel::Renamed,
        }
    }
}

/// A named set of variants, so that a test can run once per way HubSpot may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HubSpotProfile {
    /// The documented (and the sandbox's original) answers: [`Variants::default`] and
    /// [`CompanyVariants::default`].
    Documented,
    /// Every other documented or reported answer at once: [`Variants::alternative`] and
    /// [`CompanyVariants::alternative`].
    Alternative,
}

impl HubSpotProfile {
    /// Every profile, documented first.
    pub fn all() -> [Self; 2] {
        [Self::Documented, Self::Alternative]
    }

    /// The variants the sandbox plays under this profile.
    pub fn variants(self) -> Variants {
        match self {
            Self::Documented => Variants::default(),
            Self::Alternative => Variants::alternative(),
        }
    }

    /// The company and association variants the sandbox plays under this profile.
    pub fn company_variants(self) -> CompanyVariants {
        match self {
            Self::Documented => CompanyVariants::default(),
            Self::Alternative => CompanyVariants::alternative(),
        }
    }

    /// A short name for test output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Documented => "documented",
            Self::Alternative => "alternative",
        }
    }
}

/// The random stream that shuffles batch results under [`ResultOrder::Shuffled`]: a stream of
/// its own, so that shuffling never moves the fault dice or the generated contacts.
#[derive(Debug)]
pub(crate) struct Shuffler(Mutex<ChaCha8Rng>);

impl Shuffler {
    /// A stream derived from the sandbox's seed.
    pub(crate) fn new(seed: u64) -> Self {
        Self(Mutex::new(ChaCha8Rng::seed_from_u64(
            seed ^ 0x5AFF_1E00_0000_0002,
        )))
    }

    /// Puts `items` in the order `order` asks for.
    pub(crate) fn arrange<T>(&self, order: ResultOrder, items: &mut [T]) {
        if order == ResultOrder::Shuffled {
            let mut rng = self.0.lock().unwrap_or_else(|p| p.into_inner());
            items.shuffle(&mut *rng);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alternative_differs_from_the_default_in_every_field() {
        let (d, a) = (Variants::default(), Variants::alternative());
        assert_ne!(d.conflicts, a.conflicts);
        assert_ne!(d.missing_ids, a.missing_ids);
        assert_ne!(d.validation, a.validation);
        assert_ne!(d.empty_values, a.empty_values);
        assert_ne!(d.search_modified, a.search_modified);
        assert_ne!(d.result_order, a.result_order);
    }

    #[test]
    fn the_company_alternative_differs_from_the_default_in_every_field() {
        let (d, a) = (CompanyVariants::default(), CompanyVariants::alternative());
        assert_ne!(d.domain_lookup, a.domain_lookup);
        assert_ne!(d.merge_ids, a.merge_ids);
        assert_ne!(d.primary_label, a.primary_label);
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let patch: VariantsPatch =
            serde_json::from_str(r#"{"missing_ids":"omitted"}"#).expect("parses");
        let v = Variants::default().patched(patch);
        assert_eq!(v.missing_ids, MissingIds::Omitted);
        assert_eq!(
            Variants {
                missing_ids: MissingIds::Reported,
                ..v
            },
            Variants::default()
        );
        assert!(serde_json::from_str::<VariantsPatch>(r#"{"colour":"red"}"#).is_err());
    }

    #[test]
    fn shuffling_is_repeatable_for_a_seed_and_leaves_input_order_alone() {
        let run = |seed: u64, order: ResultOrder| {
            let s = Shuffler::new(seed);
            let mut items: Vec<u32> = (0..20).collect();
            s.arrange(order, &mut items);
            items
        };
        assert_eq!(run(3, ResultOrder::Shuffled), run(3, ResultOrder::Shuffled));
        assert_ne!(run(3, ResultOrder::Shuffled), run(3, ResultOrder::Input));
        assert_eq!(run(3, ResultOrder::Input), (0..20).collect::<Vec<_>>());
    }
}
