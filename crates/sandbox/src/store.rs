//! The records of one CRM object type (contacts or companies) in memory with their unique
//! indexes, and every write rule HubSpot applies (all-or-nothing batches, 409 on existing
//! emails and unique values, 207 on partial failures, merges, and a search index that lags
//! behind writes). Contacts are unique by email; companies are not unique by `domain`.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::clock::iso_millis;
use super::objects::CrmObject;
use super::properties::{PropertyCatalog, PropertyProblem};
use super::variants::{
    ConflictReport, DomainLookup, MergeIds, MissingIds, ValidationReport, Variants,
};

/// The first contact id handed out; ids then increase by one, like HubSpot's numeric ids.
pub(crate) const FIRST_ID: u64 = 10_000_000_001;

/// The first company id: far from the contacts', so that a contact id sent where a company id
/// belongs (or the other way round) names nothing instead of another record.
pub(crate) const FIRST_COMPANY_ID: u64 = 20_000_000_001;

/// The most inputs one batch call accepts.
pub(crate) const MAX_BATCH: usize = 100;

/// A contact or company record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Record id.
    pub id: u64,
    /// Property values (never empty strings: clearing removes the value).
    pub properties: BTreeMap<String, String>,
    /// Creation time, ms.
    pub created_ms: i64,
    /// Last change, ms.
    pub updated_ms: i64,
    /// Archive time, ms, when archived.
    pub archived_ms: Option<i64>,
    // Not saved: a resumed sandbox has indexed every record (the lag is seconds at most).
    #[serde(skip)]
    search: SearchView,
}

/// What the search index holds for a record: the current version once `visible_from_ms`
/// has passed, the previously indexed version (if any) before that.
#[derive(Debug, Clone, Default)]
struct SearchView {
    visible_from_ms: i64,
    previous: Option<Box<Indexed>>,
}

/// A record as the search index sees it.
#[derive(Debug, Clone)]
pub(crate) struct Indexed {
    /// Record id.
    pub id: u64,
    /// Indexed property values.
    pub properties: BTreeMap<String, String>,
    /// Creation time, ms.
    pub created_ms: i64,
    /// Last change at indexing time, ms.
    pub updated_ms: i64,
}

impl Record {
    fn snapshot(&self) -> Indexed {
        Indexed {
            id: self.id,
            properties: self.properties.clone(),
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        }
    }

    /// The email, when set.
    pub(crate) fn email(&self) -> Option<&str> {
        self.properties.get("email").map(String::as_str)
    }
}

/// Something that happened to a contact, for webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A contact was created.
    Created(u64),
    /// A property got a new value (empty = cleared).
    PropertyChanged {
        /// The contact.
        id: u64,
        /// The property.
        name: String,
        /// Its new value.
        value: String,
    },
    /// A contact was archived or deleted.
    Deleted(u64),
    /// `merged` were merged into `primary`; the result is `survivor` (the primary's id, or a
    /// new one: see [`MergeIds`]).
    Merged {
        /// The record merged into.
        primary: u64,
        /// The record merged into it.
        merged: u64,
        /// The id of the merged record.
        survivor: u64,
    },
    /// An archived record came back from the recycle bin.
    Restored(u64),
}

/// How a batch or single call names records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdKey {
    /// The record id.
    ObjectId,
    /// The email (case-insensitive).
    Email,
    /// A custom property with `hasUniqueValue`.
    Unique(String),
    /// A company's `domain`, which is not unique: the oldest live company with it
    /// ([`DomainLookup::Oldest`]).
    Domain,
}

impl IdKey {
    /// The property name the key reads.
    pub(crate) fn property(&self) -> &str {
        match self {
            Self::ObjectId => "hs_object_id",
            Self::Email => "email",
            Self::Unique(name) => name,
            Self::Domain => "domain",
        }
    }

    /// The value as the index stores it.
    fn normalise(&self, value: &str) -> String {
        match self {
            Self::Email | Self::Domain => normalise_email(value),
            _ => value.trim().to_owned(),
        }
    }
}

/// What an `idProperty` is used for: the rules differ (see [`Store::id_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyUse {
    /// Single and batch reads, single PATCH, GDPR delete.
    Read(DomainLookup),
    /// Batch update.
    Update,
    /// Batch upsert.
    Upsert,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// A live record.
    Live(u64),
    /// A record merged away into the given survivor.
    Merged(u64),
    /// An archived record.
    Archived(u64),
    /// Nothing.
    Missing,
}

/// One input of a batch create.
#[derive(Debug, Clone)]
pub(crate) struct CreateInput {
    /// Property values.
    pub values: BTreeMap<String, String>,
    /// The caller's `objectWriteTraceId`.
    pub trace: Option<String>,
}

/// One input of a batch update or upsert.
#[derive(Debug, Clone)]
pub(crate) struct KeyedInput {
    /// The id or unique value.
    pub id: String,
    /// The caller's `idProperty`.
    pub id_property: Option<String>,
    /// Property values.
    pub values: BTreeMap<String, String>,
    /// The caller's `objectWriteTraceId`.
    pub trace: Option<String>,
}

/// A record written by a batch.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    /// The record after the write.
    pub contact: Record,
    /// The input's `objectWriteTraceId`.
    pub trace: Option<String>,
    /// Upsert only: the record was created.
    pub new: bool,
    /// The properties the input wrote (answers may show them as `null` once cleared).
    pub names: Vec<String>,
    /// The position of the input that wrote it.
    pub input: usize,
}

/// A per-input failure inside a 207 answer (HubSpot's `StandardError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ItemError {
    /// `VALIDATION_ERROR`, `OBJECT_NOT_FOUND`, ...
    pub category: &'static str,
    /// English explanation.
    pub message: String,
    /// E.g. `ids`, `objectWriteTraceId`.
    pub context: BTreeMap<String, Vec<String>>,
}

/// The result of a batch write that was (at least partly) applied.
#[derive(Debug, Clone, Default)]
pub(crate) struct BatchOutcome {
    /// Records written, in input order.
    pub written: Vec<Written>,
    /// Inputs that failed alone.
    pub errors: Vec<ItemError>,
    /// What changed, for webhooks.
    pub changes: Vec<Change>,
}

impl BatchOutcome {
    /// Keeps a written record for the answer.
    fn record(
        &mut self,
        input: usize,
        contact: Option<&Record>,
        trace: Option<String>,
        names: Vec<String>,
        new: bool,
    ) {
        if let Some(contact) = contact {
            self.written.push(Written {
                contact: contact.clone(),
                trace,
                new,
                names,
                input,
            });
        }
    }
}

/// An email or unique value that another record already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clash {
    /// `email` or the unique property.
    pub property: String,
    /// The value written.
    pub value: String,
    /// The record that holds it.
    pub existing: u64,
}

/// Why a whole request was refused; nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// 400 `VALIDATION_ERROR` with HubSpot's property message.
    Invalid(String),
    /// 409 `CONFLICT`.
    Conflict(String),
    /// 400: the same id twice in one batch.
    DuplicateIds(Vec<String>),
    /// 400: more than [`MAX_BATCH`] inputs.
    TooLarge(usize),
    /// 400: an `idProperty` that cannot identify records here.
    BadIdProperty(String),
    /// 404 on a single-record call.
    NotFound(String),
}

/// A page of the list endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    /// Records on this page.
    pub records: Vec<Record>,
    /// Id to start the next page from, when there is one.
    pub next: Option<u64>,
}

/// Counts for the admin stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreCounts {
    /// Live contacts.
    pub live: usize,
    /// Archived contacts.
    pub archived: usize,
    /// Ids merged away.
    pub merged: usize,
}

/// All CRM data of the sandbox; it serialises whole, indexes included, so that a resumed
/// sandbox answers exactly as before (see `persist`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Store {
    /// What kind of records these are (older state files hold contacts only).
    #[serde(default)]
    kind: CrmObject,
    /// Live records (named for the contacts-only state files of before).
    #[serde(rename = "contacts")]
    records: BTreeMap<u64, Record>,
    archived: BTreeMap<u64, Record>,
    merged_into: HashMap<u64, u64>,
    by_email: HashMap<String, u64>,
    unique: HashMap<String, HashMap<String, u64>>,
    /// Property definitions.
    pub catalog: PropertyCatalog,
    next_id: u64,
    // A setting of this run, not data: restored stores take the current flag's.
    #[serde(skip)]
    search_delay_ms: i64,
}

/// Emails compare trimmed and lower-cased.
pub(crate) fn normalise_email(value: &str) -> String {
    value.trim().to_lowercase()
}

impl Store {
    /// An empty store of `kind` records whose writes reach search after `search_delay_ms`.
    pub(crate) fn new(kind: CrmObject, search_delay_ms: u64) -> Self {
        Self {
            kind,
            records: BTreeMap::new(),
            archived: BTreeMap::new(),
            merged_into: HashMap::new(),
            by_email: HashMap::new(),
            unique: HashMap::new(),
            catalog: PropertyCatalog::for_object(kind),
            next_id: match kind {
                CrmObject::Contacts => FIRST_ID,
                CrmObject::Companies => FIRST_COMPANY_ID,
            },
            search_delay_ms: i64::try_from(search_delay_ms).unwrap_or(i64::MAX / 4),
        }
    }

    /// Moves the id counter `gap` further on, so that ids issued before a crash the saved
    /// state does not know are never issued again.
    pub(crate) fn skip_ids(&mut self, gap: u64) {
        self.next_id = self.next_id.saturating_add(gap);
    }

    /// This store (read back from a saved state) with the index lag of this run.
    pub(crate) fn with_search_delay(mut self, search_delay_ms: u64) -> Self {
        self.search_delay_ms = i64::try_from(search_delay_ms).unwrap_or(i64::MAX / 4);
        self
    }

    /// Counts of live, archived and merged records.
    pub(crate) fn counts(&self) -> StoreCounts {
        StoreCounts {
            live: self.records.len(),
            archived: self.archived.len(),
            merged: self.merged_into.len(),
        }
    }

    /// Live records in id order.
    pub(crate) fn live(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    /// Archived records in id order.
    pub(crate) fn archived(&self) -> impl Iterator<Item = &Record> {
        self.archived.values()
    }

    /// A live record.
    pub(crate) fn get(&self, id: u64) -> Option<&Record> {
        self.records.get(&id)
    }

    /// Maps an `idProperty` to a key for `usage`: batch update refuses a contact's email,
    /// update and upsert refuse a company's `domain` (not unique), and reads by `domain` go as
    /// [`DomainLookup`] says.
    pub(crate) fn id_key(
        &self,
        id_property: Option<&str>,
        usage: KeyUse,
    ) -> Result<IdKey, WriteError> {
        let non_unique = |name: &str| {
            WriteError::BadIdProperty(format!(
                "Unable to perform update/upsert by non-unique {} property {name}",
                self.kind.type_id()
            ))
        };
        match (self.kind, id_property.map(str::trim)) {
            (_, None | Some("") | Some("hs_object_id")) => Ok(IdKey::ObjectId),
            (CrmObject::Contacts, Some("email")) if usage == KeyUse::Update => {
                Err(non_unique("email"))
            }
            (CrmObject::Contacts, Some("email")) => Ok(IdKey::Email),
            (CrmObject::Companies, Some("domain")) => match usage {
                KeyUse::Read(DomainLookup::Oldest) => Ok(IdKey::Domain),
                _ => Err(non_unique("domain")),
            },
            (_, Some(name)) if self.catalog.get(name).is_some_and(|d| d.has_unique_value) => {
                Ok(IdKey::Unique(name.to_owned()))
            }
            (_, Some(name)) if self.catalog.get(name).is_some() => Err(non_unique(name)),
            (_, Some(name)) => Err(WriteError::BadIdProperty(format!(
                "Property \"{name}\" does not exist"
            ))),
        }
    }

    /// The object type these records are.
    pub(crate) fn kind(&self) -> CrmObject {
        self.kind
    }

    /// Finds a record by id or unique value.
    pub(crate) fn find(&self, key: &IdKey, value: &str) -> Found {
        match key {
            IdKey::ObjectId => match value.trim().parse::<u64>() {
                Ok(id) => self.find_id(id),
                Err(_) => Found::Missing,
            },
            IdKey::Email => self
                .by_email
                .get(&normalise_email(value))
                .map_or(Found::Missing, |id| Found::Live(*id)),
            IdKey::Unique(name) => self
                .unique
                .get(name)
                .and_then(|index| index.get(value.trim()))
                .map_or(Found::Missing, |id| Found::Live(*id)),
            IdKey::Domain => {
                let wanted = normalise_email(value);
                // Several companies may share a domain; ids grow with age, so the first is
                // the oldest.
                self.records
                    .values()
                    .find(|c| {
                        c.properties
                            .get("domain")
                            .is_some_and(|d| normalise_email(d) == wanted)
                    })
                    .map_or(Found::Missing, |c| Found::Live(c.id))
            }
        }
    }

    fn find_id(&self, id: u64) -> Found {
        if self.records.contains_key(&id) {
            Found::Live(id)
        } else if let Some(survivor) = self.merged_into.get(&id) {
            Found::Merged(*survivor)
        } else if self.archived.contains_key(&id) {
            Found::Archived(id)
        } else {
            Found::Missing
        }
    }

    /// Records to read for an id: merged-away ids resolve to their survivor.
    pub(crate) fn resolve_for_read(
        &self,
        key: &IdKey,
        value: &str,
        archived: bool,
    ) -> Option<&Record> {
        match (self.find(key, value), archived) {
            (Found::Live(id) | Found::Merged(id), false) => self.records.get(&id),
            (Found::Archived(id), true) => self.archived.get(&id),
            _ => None,
        }
    }

    /// One page of live (or archived) records in id order, from `after` on.
    pub(crate) fn list(&self, after: u64, limit: usize, archived: bool) -> Page {
        let source = if archived {
            &self.archived
        } else {
            &self.records
        };
        let mut iter = source.range(after..);
        let records: Vec<Record> = iter.by_ref().take(limit).map(|(_, c)| c.clone()).collect();
        let next = iter.next().map(|(id, _)| *id);
        Page { records, next }
    }

    /// What search sees now: records whose latest write has been indexed, and the older
    /// indexed version of those written since.
    pub(crate) fn search_view(&self, now_ms: i64) -> impl Iterator<Item = SearchRecord<'_>> {
        self.records.values().filter_map(move |c| {
            if now_ms >= c.search.visible_from_ms {
                Some(SearchRecord {
                    id: c.id,
                    properties: &c.properties,
                    created_ms: c.created_ms,
                    updated_ms: c.updated_ms,
                })
            } else {
                c.search.previous.as_deref().map(|p| SearchRecord {
                    id: p.id,
                    properties: &p.properties,
                    created_ms: p.created_ms,
                    updated_ms: p.updated_ms,
                })
            }
        })
    }

    // ---- single-record writes -------------------------------------------------------

    /// Creates one contact (HubSpot's `POST /contacts`).
    pub(crate) fn create_one(
        &mut self,
        mut values: BTreeMap<String, String>,
        now_ms: i64,
        validation: ValidationReport,
    ) -> Result<(Record, Vec<Change>), WriteError> {
        self.normalise_values(&mut values);
        let problems = self.catalog.check_values(&values);
        if !problems.is_empty() {
            return Err(invalid(&problems, validation));
        }
        if let Some(existing) = self.conflict_for(&values, None) {
            return Err(WriteError::Conflict(self.conflict_message(existing)));
        }
        let id = self.insert_new(values, now_ms);
        let contact = self
            .records
            .get(&id)
            .cloned()
            .ok_or_else(|| WriteError::NotFound(id.to_string()))?;
        Ok((contact, vec![Change::Created(id)]))
    }

    /// Updates one contact (HubSpot's `PATCH /contacts/{id}`).
    pub(crate) fn update_one(
        &mut self,
        key: &IdKey,
        raw_id: &str,
        mut values: BTreeMap<String, String>,
        now_ms: i64,
        validation: ValidationReport,
    ) -> Result<(Record, Vec<Change>), WriteError> {
        let id = match self.find(key, raw_id) {
            Found::Live(id) | Found::Merged(id) => id,
            Found::Archived(_) | Found::Missing => {
                return Err(WriteError::NotFound(raw_id.to_owned()));
            }
        };
        self.normalise_values(&mut values);
        let problems = self.catalog.check_values(&values);
        if !problems.is_empty() {
            return Err(invalid(&problems, validation));
        }
        if let Some(existing) = self.conflict_for(&values, Some(id)) {
            return Err(WriteError::Conflict(self.conflict_message(existing)));
        }
        let changes = self.apply(id, &values, now_ms);
        let contact = self
            .records
            .get(&id)
            .cloned()
            .ok_or_else(|| WriteError::NotFound(raw_id.to_owned()))?;
        Ok((contact, changes))
    }

    /// Archives one contact; unknown ids are not an error (HubSpot answers 204 too).
    pub(crate) fn archive_one(&mut self, key: &IdKey, raw_id: &str, now_ms: i64) -> Vec<Change> {
        match self.find(key, raw_id) {
            Found::Live(id) => self.archive_id(id, now_ms),
            _ => Vec::new(),
        }
    }

    /// Brings an archived record back from the recycle bin (as a person does in HubSpot's
    /// UI; there is no public endpoint). Refused while a live record holds one of its unique
    /// values, as HubSpot refuses to restore a contact whose email another contact has.
    pub(crate) fn restore(&mut self, id: u64, now_ms: i64) -> Result<Vec<Change>, WriteError> {
        let record = self
            .archived
            .get(&id)
            .ok_or_else(|| WriteError::NotFound(id.to_string()))?;
        if let Some(existing) = self.conflict_for(&record.properties, Some(id)) {
            return Err(WriteError::Conflict(self.conflict_message(existing)));
        }
        let Some(mut record) = self.archived.remove(&id) else {
            return Err(WriteError::NotFound(id.to_string()));
        };
        record.archived_ms = None;
        record.updated_ms = now_ms;
        record.search = SearchView {
            visible_from_ms: now_ms.saturating_add(self.search_delay_ms),
            previous: None,
        };
        self.index(&record);
        self.records.insert(id, record);
        Ok(vec![Change::Restored(id)])
    }

    /// Deletes a contact for good, also from the archive (GDPR delete).
    pub(crate) fn purge(&mut self, key: &IdKey, raw_id: &str) -> Result<Vec<Change>, WriteError> {
        let id = match self.find(key, raw_id) {
            Found::Live(id) | Found::Archived(id) => id,
            Found::Merged(_) | Found::Missing => {
                return Err(WriteError::NotFound(raw_id.to_owned()));
            }
        };
        if let Some(c) = self.records.remove(&id) {
            self.unindex(&c);
        }
        self.archived.remove(&id);
        self.merged_into.retain(|_, survivor| *survivor != id);
        Ok(vec![Change::Deleted(id)])
    }

    /// Merges `secondary` into `primary`. Contacts: the primary keeps its values, takes the
    /// secondary's where it has none and lists the secondary's email in
    /// `hs_additional_emails`. Companies: the primary keeps its `domain`, every other value
    /// comes from the record changed last (HubSpot's KB). Either way the secondary's id goes to
    /// `hs_merged_object_ids` and then resolves to the result, which keeps the primary's id or,
    /// for companies under [`MergeIds::NewId`], gets a new one that both old ids resolve to.
    pub(crate) fn merge(
        &mut self,
        primary_raw: &str,
        secondary_raw: &str,
        now_ms: i64,
        merge_ids: MergeIds,
    ) -> Result<(Record, Vec<Change>), WriteError> {
        let live = |found: Found, raw: &str| match found {
            Found::Live(id) => Ok(id),
            _ => Err(WriteError::NotFound(raw.to_owned())),
        };
        let primary = live(self.find(&IdKey::ObjectId, primary_raw), primary_raw)?;
        let secondary = live(self.find(&IdKey::ObjectId, secondary_raw), secondary_raw)?;
        if primary == secondary {
            return Err(WriteError::Invalid(
                "Cannot merge an object with itself.".to_owned(),
            ));
        }
        let gone = self
            .records
            .remove(&secondary)
            .ok_or_else(|| WriteError::NotFound(secondary_raw.to_owned()))?;
        self.unindex(&gone);
        let p = self
            .records
            .get(&primary)
            .ok_or_else(|| WriteError::NotFound(primary_raw.to_owned()))?;
        let mut values = self.merged_values(p, &gone);
        let mut merged_ids: Vec<String> = split_list(p.properties.get("hs_merged_object_ids"));
        merged_ids.push(gone.id.to_string());
        merged_ids.extend(split_list(gone.properties.get("hs_merged_object_ids")));
        values.insert("hs_merged_object_ids".to_owned(), merged_ids.join(";"));
        let new_id = self.kind == CrmObject::Companies && merge_ids == MergeIds::NewId;
        let (survivor, mut changes) = if new_id {
            self.merge_into_new(primary, values, now_ms)?
        } else {
            (primary, self.apply(primary, &values, now_ms))
        };
        // Records once merged into either now resolve to the survivor too.
        for target in self.merged_into.values_mut() {
            if *target == secondary || *target == primary {
                *target = survivor;
            }
        }
        self.merged_into.insert(secondary, survivor);
        if survivor != primary {
            self.merged_into.insert(primary, survivor);
        }
        changes.push(Change::Merged {
            primary,
            merged: secondary,
            survivor,
        });
        let record = self
            .records
            .get(&survivor)
            .cloned()
            .ok_or_else(|| WriteError::NotFound(primary_raw.to_owned()))?;
        Ok((record, changes))
    }

    /// The values the primary takes from the record merged into it.
    fn merged_values(&self, primary: &Record, gone: &Record) -> BTreeMap<String, String> {
        let writable = |name: &str| self.catalog.get(name).is_some_and(|d| !d.read_only_value);
        let mut values = BTreeMap::new();
        // Companies: the record changed last wins, except that the primary keeps its domain.
        let secondary_newer =
            self.kind == CrmObject::Companies && gone.updated_ms > primary.updated_ms;
        for (name, value) in &gone.properties {
            let take =
                !primary.properties.contains_key(name) || (secondary_newer && name != "domain");
            if take && writable(name) {
                values.insert(name.clone(), value.clone());
            }
        }
        if self.kind == CrmObject::Contacts {
            let mut extra_emails = split_list(primary.properties.get("hs_additional_emails"));
            if let Some(email) = gone.email().filter(|e| Some(*e) != primary.email()) {
                extra_emails.push(email.to_owned());
            }
            extra_emails.extend(split_list(gone.properties.get("hs_additional_emails")));
            if !extra_emails.is_empty() {
                values.insert("hs_additional_emails".to_owned(), extra_emails.join(";"));
            }
        }
        values
    }

    /// Replaces `primary` by a new record holding its values changed by `values`; the
    /// primary's id then resolves to the new one.
    fn merge_into_new(
        &mut self,
        primary: u64,
        values: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<(u64, Vec<Change>), WriteError> {
        let old = self
            .records
            .remove(&primary)
            .ok_or_else(|| WriteError::NotFound(primary.to_string()))?;
        self.unindex(&old);
        let mut merged: BTreeMap<String, String> = old
            .properties
            .iter()
            .filter(|(name, _)| self.catalog.get(name).is_some_and(|d| !d.read_only_value))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut ids = vec![old.id.to_string()];
        ids.extend(split_list(values.get("hs_merged_object_ids")));
        for (name, value) in values {
            merged.insert(name, value);
        }
        merged.insert("hs_merged_object_ids".to_owned(), ids.join(";"));
        let id = self.insert_new(merged, now_ms);
        Ok((id, vec![Change::Created(id)]))
    }

    // ---- batches --------------------------------------------------------------------

    /// HubSpot's batch create: all or nothing, except that when every input carries an
    /// `objectWriteTraceId` invalid inputs fail alone (207) and the rest are created; clashing
    /// inputs then fail alone too under [`ConflictReport::PerInput`].
    pub(crate) fn batch_create(
        &mut self,
        inputs: Vec<CreateInput>,
        now_ms: i64,
        rules: &Variants,
    ) -> Result<BatchOutcome, WriteError> {
        check_size(inputs.len())?;
        let all_traced = inputs.iter().all(|i| i.trace.is_some());
        let mut outcome = BatchOutcome::default();
        let mut accepted = Vec::with_capacity(inputs.len());
        let mut problems = Vec::new();
        for (index, mut input) in inputs.into_iter().enumerate() {
            self.normalise_values(&mut input.values);
            let found = self.catalog.check_values(&input.values);
            if found.is_empty() {
                accepted.push((index, input));
            } else if all_traced {
                outcome.errors.push(validation_item(
                    &found,
                    input.trace.as_deref(),
                    rules.validation,
                ));
            } else {
                problems.extend(found);
            }
        }
        if !problems.is_empty() {
            return Err(invalid(&problems, rules.validation));
        }
        let per_input = rules.conflicts == ConflictReport::PerInput && all_traced;
        if !per_input {
            self.check_batch_conflicts(accepted.iter().map(|(_, i)| (None, &i.values)))?;
        }
        for (index, input) in accepted {
            // Inputs are applied one by one, so a later input clashes with an earlier one.
            if let Some(clash) = self.clash_for(&input.values, None) {
                outcome
                    .errors
                    .push(self.conflict_item(&clash, input.trace.as_deref()));
                continue;
            }
            let names = input.values.keys().cloned().collect();
            let id = self.insert_new(input.values, now_ms);
            outcome.changes.push(Change::Created(id));
            outcome.record(index, self.records.get(&id), input.trace, names, true);
        }
        Ok(outcome)
    }

    /// HubSpot's batch update: ids must be distinct; unknown, archived and merged-away ids are
    /// answered as [`MissingIds`] says; clashes as [`ConflictReport`] says (per input only when
    /// every input carries an `objectWriteTraceId`).
    pub(crate) fn batch_update(
        &mut self,
        inputs: Vec<KeyedInput>,
        now_ms: i64,
        rules: &Variants,
    ) -> Result<BatchOutcome, WriteError> {
        check_size(inputs.len())?;
        let keys = inputs
            .iter()
            .map(|i| self.id_key(i.id_property.as_deref(), KeyUse::Update))
            .collect::<Result<Vec<_>, _>>()?;
        check_duplicates(
            inputs.iter().zip(&keys).map(|(i, k)| (k, i.id.as_str())),
            rules.validation,
        )?;
        let all_traced = inputs.iter().all(|i| i.trace.is_some());
        let mut outcome = BatchOutcome::default();
        let mut accepted = Vec::with_capacity(inputs.len());
        let mut problems = Vec::new();
        for (index, (mut input, key)) in inputs.into_iter().zip(keys).enumerate() {
            let id = match (self.find(&key, &input.id), rules.missing_ids) {
                (Found::Live(id), _) => id,
                (_, MissingIds::Omitted) | (Found::Merged(_), MissingIds::Reported) => continue,
                _ => {
                    outcome.errors.push(not_found_item(
                        self.kind,
                        &[input.id.clone()],
                        input.trace.as_deref(),
                    ));
                    continue;
                }
            };
            self.normalise_values(&mut input.values);
            let found = self.catalog.check_values(&input.values);
            if found.is_empty() {
                accepted.push((id, index, input));
            } else if all_traced {
                outcome.errors.push(validation_item(
                    &found,
                    input.trace.as_deref(),
                    rules.validation,
                ));
            } else {
                problems.extend(found);
            }
        }
        if !problems.is_empty() {
            return Err(invalid(&problems, rules.validation));
        }
        let per_input = rules.conflicts == ConflictReport::PerInput && all_traced;
        if !per_input {
            self.check_batch_conflicts(accepted.iter().map(|(id, _, i)| (Some(*id), &i.values)))?;
        }
        for (id, index, input) in accepted {
            if let Some(clash) = self.clash_for(&input.values, Some(id)) {
                outcome
                    .errors
                    .push(self.conflict_item(&clash, input.trace.as_deref()));
                continue;
            }
            outcome
                .changes
                .extend(self.apply(id, &input.values, now_ms));
            let names = input.values.keys().cloned().collect();
            outcome.record(index, self.records.get(&id), input.trace, names, false);
        }
        Ok(outcome)
    }

    /// HubSpot's batch upsert by email or a unique property: existing records are updated,
    /// others created (`new: true`); invalid inputs fail alone (207), and so do clashing ones
    /// under [`ConflictReport::PerInput`].
    pub(crate) fn batch_upsert(
        &mut self,
        inputs: Vec<KeyedInput>,
        now_ms: i64,
        rules: &Variants,
    ) -> Result<BatchOutcome, WriteError> {
        check_size(inputs.len())?;
        let keys = inputs
            .iter()
            .map(
                |i| match self.id_key(i.id_property.as_deref(), KeyUse::Upsert)? {
                    IdKey::ObjectId => Err(WriteError::BadIdProperty(
                        match self.kind {
                            CrmObject::Contacts => {
                                "Upsert requires idProperty: email or a property with unique values"
                            }
                            CrmObject::Companies => {
                                "Upsert requires idProperty: a property with unique values"
                            }
                        }
                        .to_owned(),
                    )),
                    key => Ok(key),
                },
            )
            .collect::<Result<Vec<_>, _>>()?;
        check_duplicates(
            inputs.iter().zip(&keys).map(|(i, k)| (k, i.id.as_str())),
            rules.validation,
        )?;
        let mut outcome = BatchOutcome::default();
        let mut accepted: Vec<(Option<u64>, usize, KeyedInput)> = Vec::with_capacity(inputs.len());
        for (index, (mut input, key)) in inputs.into_iter().zip(keys).enumerate() {
            let target = match self.find(&key, &input.id) {
                Found::Live(id) | Found::Merged(id) => Some(id),
                Found::Archived(_) | Found::Missing => None,
            };
            if target.is_none() {
                input
                    .values
                    .entry(key.property().to_owned())
                    .or_insert_with(|| input.id.clone());
            }
            self.normalise_values(&mut input.values);
            let mut found = self.catalog.check_values(&input.values);
            if key == IdKey::Email
                && !super::properties::is_valid_email(&normalise_email(&input.id))
            {
                found.push(PropertyProblem::invalid_email(&input.id));
            }
            if found.is_empty() {
                accepted.push((target, index, input));
            } else {
                outcome.errors.push(validation_item(
                    &found,
                    input.trace.as_deref(),
                    rules.validation,
                ));
            }
        }
        if rules.conflicts == ConflictReport::WholeBatch {
            self.check_batch_conflicts(accepted.iter().map(|(id, _, i)| (*id, &i.values)))?;
        }
        for (target, index, input) in accepted {
            if let Some(clash) = self.clash_for(&input.values, target) {
                outcome
                    .errors
                    .push(self.conflict_item(&clash, input.trace.as_deref()));
                continue;
            }
            let names = input.values.keys().cloned().collect();
            let (id, new) = match target {
                Some(id) => {
                    outcome
                        .changes
                        .extend(self.apply(id, &input.values, now_ms));
                    (id, false)
                }
                None => {
                    let id = self.insert_new(input.values, now_ms);
                    outcome.changes.push(Change::Created(id));
                    (id, true)
                }
            };
            outcome.record(index, self.records.get(&id), input.trace, names, new);
        }
        Ok(outcome)
    }

    /// HubSpot's batch archive: unknown ids are ignored.
    pub(crate) fn batch_archive(
        &mut self,
        ids: &[String],
        now_ms: i64,
    ) -> Result<Vec<Change>, WriteError> {
        check_size(ids.len())?;
        let mut changes = Vec::new();
        for raw in ids {
            changes.extend(self.archive_one(&IdKey::ObjectId, raw, now_ms));
        }
        Ok(changes)
    }

    /// HubSpot's batch read: found records plus the inputs that matched nothing. Merged-away
    /// ids read as their survivor, except under [`MissingIds::Omitted`] (then they match
    /// nothing).
    pub(crate) fn batch_read(
        &self,
        key: &IdKey,
        ids: &[String],
        archived: bool,
        missing_ids: MissingIds,
    ) -> Result<(Vec<Record>, Vec<String>), WriteError> {
        check_size(ids.len())?;
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for raw in ids {
            let merged_away = matches!(self.find(key, raw), Found::Merged(_));
            if merged_away && missing_ids == MissingIds::Omitted {
                missing.push(raw.clone());
                continue;
            }
            match self.resolve_for_read(key, raw, archived) {
                Some(c) if seen.insert(c.id) => found.push(c.clone()),
                Some(_) => {}
                None => missing.push(raw.clone()),
            }
        }
        Ok((found, missing))
    }

    // ---- admin ---------------------------------------------------------------------

    /// Inserts records as given, skipping values that break a rule (admin seeding).
    /// Returns the new ids.
    pub(crate) fn insert_unchecked(
        &mut self,
        records: Vec<BTreeMap<String, String>>,
        now_ms: i64,
    ) -> Vec<u64> {
        let mut ids = Vec::with_capacity(records.len());
        for mut values in records {
            self.normalise_values(&mut values);
            values.retain(|name, _| self.catalog.get(name).is_some_and(|d| !d.read_only_value));
            if self.conflict_for(&values, None).is_some() {
                continue;
            }
            ids.push(self.insert_new(values, now_ms));
        }
        ids
    }

    /// Creates a record HubSpot's own automation makes (no checks: the values are its own).
    pub(crate) fn insert_automatic(
        &mut self,
        values: BTreeMap<String, String>,
        now_ms: i64,
    ) -> u64 {
        self.insert_new(values, now_ms)
    }

    /// Makes every pending write visible to search at once.
    pub(crate) fn flush_search_index(&mut self) {
        for c in self.records.values_mut() {
            c.search = SearchView::default();
        }
    }

    // ---- internals -----------------------------------------------------------------

    fn insert_new(&mut self, mut values: BTreeMap<String, String>, now_ms: i64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        values.retain(|_, v| !v.is_empty());
        values.insert("hs_object_id".to_owned(), id.to_string());
        values.insert("createdate".to_owned(), iso_millis(now_ms));
        values.insert(self.kind.modified_property().to_owned(), iso_millis(now_ms));
        let contact = Record {
            id,
            properties: values,
            created_ms: now_ms,
            updated_ms: now_ms,
            archived_ms: None,
            search: SearchView {
                visible_from_ms: now_ms.saturating_add(self.search_delay_ms),
                previous: None,
            },
        };
        self.index(&contact);
        self.records.insert(id, contact);
        id
    }

    /// Applies property values to a live record; returns what changed.
    fn apply(&mut self, id: u64, values: &BTreeMap<String, String>, now_ms: i64) -> Vec<Change> {
        let delay = self.search_delay_ms;
        let Some(mut contact) = self.records.remove(&id) else {
            return Vec::new();
        };
        self.unindex(&contact);
        let before =
            (delay > 0 && now_ms >= contact.search.visible_from_ms).then(|| contact.snapshot());
        let mut changes = Vec::new();
        for (name, value) in values {
            let old = contact.properties.get(name);
            if old.map(String::as_str).unwrap_or("") == value {
                continue;
            }
            if value.is_empty() {
                contact.properties.remove(name);
            } else {
                contact.properties.insert(name.clone(), value.clone());
            }
            changes.push(Change::PropertyChanged {
                id,
                name: name.clone(),
                value: value.clone(),
            });
        }
        if !changes.is_empty() {
            contact.updated_ms = now_ms;
            contact
                .properties
                .insert(self.kind.modified_property().to_owned(), iso_millis(now_ms));
            if let Some(snapshot) = before {
                contact.search.previous = Some(Box::new(snapshot));
            }
            contact.search.visible_from_ms = now_ms.saturating_add(delay);
        }
        self.index(&contact);
        self.records.insert(id, contact);
        changes
    }

    fn archive_id(&mut self, id: u64, now_ms: i64) -> Vec<Change> {
        let Some(mut contact) = self.records.remove(&id) else {
            return Vec::new();
        };
        self.unindex(&contact);
        contact.archived_ms = Some(now_ms);
        contact.search = SearchView::default();
        self.archived.insert(id, contact);
        vec![Change::Deleted(id)]
    }

    fn index(&mut self, c: &Record) {
        if let Some(email) = c.email() {
            self.by_email.insert(normalise_email(email), c.id);
        }
        for extra in split_list(c.properties.get("hs_additional_emails")) {
            self.by_email.entry(normalise_email(&extra)).or_insert(c.id);
        }
        for name in self.catalog.unique_names() {
            if let Some(v) = c.properties.get(&name) {
                self.unique.entry(name).or_default().insert(v.clone(), c.id);
            }
        }
    }

    fn unindex(&mut self, c: &Record) {
        let mut emails: Vec<String> = split_list(c.properties.get("hs_additional_emails"));
        emails.extend(c.email().map(str::to_owned));
        for email in emails {
            let key = normalise_email(&email);
            if self.by_email.get(&key) == Some(&c.id) {
                self.by_email.remove(&key);
            }
        }
        for (name, index) in &mut self.unique {
            if let Some(v) = c.properties.get(name)
                && index.get(v) == Some(&c.id)
            {
                index.remove(v);
            }
        }
    }

    /// The record that already holds one of the unique values being written.
    fn conflict_for(&self, values: &BTreeMap<String, String>, except: Option<u64>) -> Option<u64> {
        self.clash_for(values, except).map(|c| c.existing)
    }

    /// The first unique value being written that a record other than `except` holds
    /// (email first, then the unique properties).
    fn clash_for(&self, values: &BTreeMap<String, String>, except: Option<u64>) -> Option<Clash> {
        let other = |id: &u64| Some(*id) != except;
        if let Some(email) = values.get("email").filter(|e| !e.is_empty())
            && let Some(id) = self
                .by_email
                .get(&normalise_email(email))
                .filter(|id| other(id))
        {
            return Some(Clash {
                property: "email".to_owned(),
                value: email.clone(),
                existing: *id,
            });
        }
        let mut unique: Vec<_> = self.unique.iter().collect();
        // HashMap order varies between runs; the first clash named must not.
        unique.sort_by(|a, b| a.0.cmp(b.0));
        unique.into_iter().find_map(|(name, index)| {
            let value = values.get(name).filter(|v| !v.is_empty())?;
            let id = index.get(value).filter(|id| other(id))?;
            Some(Clash {
                property: name.clone(),
                value: value.clone(),
                existing: *id,
            })
        })
    }

    /// 409 when a value exists in another record, or twice in the batch.
    fn check_batch_conflicts<'a>(
        &self,
        writes: impl Iterator<Item = (Option<u64>, &'a BTreeMap<String, String>)>,
    ) -> Result<(), WriteError> {
        let unique = self.catalog.unique_names();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for (id, values) in writes {
            if let Some(existing) = self.conflict_for(values, id) {
                return Err(WriteError::Conflict(self.conflict_message(existing)));
            }
            for name in std::iter::once("email").chain(unique.iter().map(String::as_str)) {
                if let Some(v) = values.get(name).filter(|v| !v.is_empty())
                    && !seen.insert((name.to_owned(), v.clone()))
                {
                    return Err(WriteError::Conflict(format!(
                        "{} already exists. Duplicate {name} in batch input: {v}",
                        self.kind.title()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A record as search sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SearchRecord<'a> {
    /// Record id.
    pub id: u64,
    /// Indexed values.
    pub properties: &'a BTreeMap<String, String>,
    /// Creation time, ms.
    pub created_ms: i64,
    /// Last change, ms.
    pub updated_ms: i64,
}

impl Store {
    fn conflict_message(&self, existing: u64) -> String {
        format!(
            "{} already exists. Existing ID: {existing}",
            self.kind.title()
        )
    }

    /// Contacts' emails are stored trimmed and lower-cased (companies have no email).
    fn normalise_values(&self, values: &mut BTreeMap<String, String>) {
        if self.kind == CrmObject::Contacts
            && let Some(email) = values.get_mut("email")
        {
            *email = normalise_email(email);
        }
    }

    /// The 207 error of one input whose email or unique value exists already.
    fn conflict_item(&self, clash: &Clash, trace: Option<&str>) -> ItemError {
        let message = if clash.property == "email" {
            self.conflict_message(clash.existing)
        } else {
            format!(
                "A {} with the value \"{}\" for the unique property \"{}\" already exists. Existing ID: {}",
                self.kind.singular(),
                clash.value,
                clash.property,
                clash.existing
            )
        };
        ItemError {
            category: "CONFLICT",
            message,
            context: trace_context(trace),
        }
    }
}

fn split_list(value: Option<&String>) -> Vec<String> {
    value
        .map(|v| {
            v.split(';')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn check_size(n: usize) -> Result<(), WriteError> {
    if n > MAX_BATCH {
        Err(WriteError::TooLarge(n))
    } else {
        Ok(())
    }
}

fn check_duplicates<'a>(
    ids: impl Iterator<Item = (&'a IdKey, &'a str)>,
    how: ValidationReport,
) -> Result<(), WriteError> {
    let mut seen = HashSet::new();
    let mut dups = Vec::new();
    for (key, raw) in ids {
        let norm = key.normalise(raw);
        if !seen.insert(norm) && !dups.iter().any(|d: &String| d == raw) {
            dups.push(raw.to_owned());
            if how == ValidationReport::First {
                break;
            }
        }
    }
    if dups.is_empty() {
        Ok(())
    } else {
        Err(WriteError::DuplicateIds(dups))
    }
}

/// The problems a validation error names.
fn reported(problems: &[PropertyProblem], how: ValidationReport) -> &[PropertyProblem] {
    match how {
        ValidationReport::Every => problems,
        ValidationReport::First => &problems[..problems.len().min(1)],
    }
}

/// The 400 of a refused write.
fn invalid(problems: &[PropertyProblem], how: ValidationReport) -> WriteError {
    WriteError::Invalid(PropertyProblem::summary(reported(problems, how)))
}

fn validation_item(
    problems: &[PropertyProblem],
    trace: Option<&str>,
    how: ValidationReport,
) -> ItemError {
    let problems = reported(problems, how);
    let mut context = trace_context(trace);
    let names: Vec<String> = problems.iter().map(|p| p.name.clone()).collect();
    context.insert("propertyName".to_owned(), names);
    ItemError {
        category: "VALIDATION_ERROR",
        message: PropertyProblem::summary(problems),
        context,
    }
}

fn trace_context(trace: Option<&str>) -> BTreeMap<String, Vec<String>> {
    let mut context = BTreeMap::new();
    if let Some(t) = trace {
        context.insert("objectWriteTraceId".to_owned(), vec![t.to_owned()]);
    }
    context
}

/// HubSpot's message when some ids of a batch matched nothing.
pub(crate) fn not_found_message(kind: CrmObject) -> String {
    format!(
        "Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.",
        kind.upper()
    )
}

/// The 207 error for ids that matched nothing.
pub(crate) fn not_found_item(kind: CrmObject, ids: &[String], trace: Option<&str>) -> ItemError {
    let mut context = trace_context(trace);
    context.insert("ids".to_owned(), ids.to_vec());
    ItemError {
        category: "OBJECT_NOT_FOUND",
        message: not_found_message(kind),
        context,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn create(store: &mut Store, email: &str) -> u64 {
        let out = store
            .batch_create(
                vec![CreateInput {
                    values: props(&[("email", email)]),
                    trace: None,
                }],
                1,
                &Variants::default(),
            )
            .expect("created");
        out.written[0].contact.id
    }

    #[test]
    fn batch_create_refuses_the_whole_batch_naming_the_first_existing_id() {
        let mut store = Store::new(CrmObject::Contacts, 0);
        let first = create(&mut store, "a@example.com");
        let _second = create(&mut store, "b@example.com");
        let inputs = ["new@example.com", "B@example.com", "A@example.com"]
            .iter()
            .map(|e| CreateInput {
                values: props(&[("email", e)]),
                trace: None,
            })
            .collect();
        let err = store
            .batch_create(inputs, 2, &Variants::default())
            .expect_err("conflict");
        assert_eq!(
            err,
            WriteError::Conflict(format!(
                "Contact already exists. Existing ID: {}",
                first + 1
            ))
        );
        assert_eq!(
            store.counts().live,
            2,
            "nothing of the refused batch was persisted"
        );
    }

    #[test]
    fn merged_away_ids_resolve_to_the_survivor_for_reads() {
        let mut store = Store::new(CrmObject::Contacts, 0);
        let a = create(&mut store, "a@example.com");
        let b = create(&mut store, "b@example.com");
        let (merged, changes) = store
            .merge(&a.to_string(), &b.to_string(), 5, MergeIds::KeepPrimary)
            .expect("merged");
        assert_eq!(merged.properties["hs_merged_object_ids"], b.to_string());
        assert_eq!(merged.properties["hs_additional_emails"], "b@example.com");
        assert!(changes.contains(&Change::Merged {
            primary: a,
            merged: b,
            survivor: a,
        }));
        let read = store
            .resolve_for_read(&IdKey::ObjectId, &b.to_string(), false)
            .expect("resolves");
        assert_eq!(read.id, a);
        assert_eq!(store.find(&IdKey::Email, "B@example.com"), Found::Live(a));
    }

    #[test]
    fn search_sees_the_previous_version_until_the_delay_passed() {
        let mut store = Store::new(CrmObject::Contacts, 1000);
        let id = create(&mut store, "a@example.com");
        assert_eq!(
            store.search_view(500).count(),
            0,
            "new record not yet indexed"
        );
        assert_eq!(store.search_view(1001).count(), 1);
        store
            .update_one(
                &IdKey::ObjectId,
                &id.to_string(),
                props(&[("firstname", "Ada")]),
                2000,
                ValidationReport::Every,
            )
            .expect("updated");
        let stale: Vec<_> = store.search_view(2500).collect();
        assert_eq!(stale.len(), 1);
        assert!(!stale[0].properties.contains_key("firstname"));
        let fresh: Vec<_> = store.search_view(3000).collect();
        assert_eq!(fresh[0].properties["firstname"], "Ada");
    }
}
