//! Object mappings (`[[sync.objects]]`): which local table or view a HubSpot object syncs with,
//! which column is its key, which property matches records on both sides, where the HubSpot id
//! is kept, and how each mapped column travels (`[sync.objects.fields]`).
//!
//! The path of a mapping: [`parse`] turns the configuration's text into the typed
//! [`ObjectMapping`]s of [`crate::config::SyncSettings::objects`] (every problem that needs no
//! database is found there, naming its key); [`validate`] checks them against the database's
//! catalog at start-up ([`CheckedMapping`] knows each column's type); [`properties`] makes sure
//! the mapped HubSpot properties exist when a job starts; [`convert`] turns values into the
//! format their property takes, one record at a time.

pub mod convert;
mod names;
pub mod parse;
pub mod properties;
pub mod validate;

pub use crate::hubspot::{FieldType, ObjectType, PropertyKind};
pub use names::{ColumnName, NameError, PropertyName, TableRef};
pub use validate::{CheckedField, CheckedMapping, MappingError, check_mappings};

/// Which way a mapped field travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Local to HubSpot only: pull never writes the column.
    Push,
    /// HubSpot to local only: push never sends the property.
    Pull,
    /// Both ways; its [`Owner`] wins when both sides changed.
    Both,
}

impl Direction {
    /// The word used in configuration and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Pull => "pull",
            Self::Both => "both",
        }
    }

    /// Whether pull writes the local column (so the table must be writable: not a view).
    pub fn writes_locally(self) -> bool {
        matches!(self, Self::Pull | Self::Both)
    }

    /// Whether push sends the property.
    pub fn writes_to_hubspot(self) -> bool {
        matches!(self, Self::Push | Self::Both)
    }
}

/// The side whose value wins when a field syncing both ways changed on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The local database's value wins.
    Local,
    /// HubSpot's value wins.
    HubSpot,
}

impl Owner {
    /// The word used in configuration and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::HubSpot => "hubspot",
        }
    }
}

/// How a field travels: one way, or both ways with the side that wins a conflict. An owner
/// exists only for [`Direction::Both`], so a one-way field with an owner cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    /// Local to HubSpot only.
    Push,
    /// HubSpot to local only.
    Pull,
    /// Both ways; the owner wins a conflict.
    Both(Owner),
}

impl Flow {
    /// The direction alone.
    pub fn direction(self) -> Direction {
        match self {
            Self::Push => Direction::Push,
            Self::Pull => Direction::Pull,
            Self::Both(_) => Direction::Both,
        }
    }

    /// The owner, for a field syncing both ways.
    pub fn owner(self) -> Option<Owner> {
        match self {
            Self::Both(owner) => Some(owner),
            Self::Push | Self::Pull => None,
        }
    }
}

/// The HubSpot property type (and form control) a mapping declares for a property crm-sync may
/// have to create; absent, both are derived from the column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeclaredType {
    /// `type`.
    pub kind: PropertyKind,
    /// `field_type` (the first one HubSpot allows for the type when not written).
    pub field: FieldType,
}

/// One `[sync.objects.fields]` entry: a local column and the HubSpot property it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMapping {
    /// The local column (the entry's key).
    pub column: ColumnName,
    /// The HubSpot property's internal name.
    pub property: PropertyName,
    /// Which way it travels and, both ways, who wins.
    pub flow: Flow,
    /// The type to create the property with, when declared.
    pub declared: Option<DeclaredType>,
}

/// What identifies a record on both sides besides its HubSpot id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchKey {
    /// A mapped property whose values HubSpot keeps unique: contacts' `email`, or a company
    /// property created with unique values (e.g. `product_account_id`).
    Property(PropertyName),
    /// crm-sync's own unique external-key property, namespaced per installation (the default
    /// for companies: a company's `domain` is not unique in HubSpot).
    ExternalKey,
}

impl MatchKey {
    /// The word used in configuration and the API.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Property(name) => name.as_str(),
            Self::ExternalKey => EXTERNAL_KEY_WORD,
        }
    }
}

/// How `match_key` names crm-sync's external key.
pub const EXTERNAL_KEY_WORD: &str = "external_key";

/// Where the HubSpot id of a local record is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubSpotIdStore {
    /// crm-sync's own link table: the user's table gets no column.
    LinkTable,
    /// A column of the mapped table (the shipped `contacts.hs_object_id`).
    Column(ColumnName),
}

/// A contacts mapping's association with the contact's primary company (`company_column`):
/// the column of the user's table holding the local key of the contact's company, and which
/// way the association travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyAssociation {
    /// The column holding the company's local key (whole number or text).
    pub column: ColumnName,
    /// `company_direction` and `company_owner`: both ways, owned locally, unless configured
    /// otherwise (as the built-in `contacts.company_id`, whose local side wins).
    pub flow: Flow,
}

/// One `[[sync.objects]]` entry, checked for everything that needs no database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMapping {
    /// The HubSpot object.
    pub object: ObjectType,
    /// The local table or view.
    pub table: TableRef,
    /// The local unique key column (primary key or single-column unique index).
    pub key_column: ColumnName,
    /// What matches records on both sides.
    pub match_key: MatchKey,
    /// Where the HubSpot id is kept.
    pub hubspot_id: HubSpotIdStore,
    /// Whether mapped properties missing in HubSpot are created (in the `crm_sync` group).
    pub create_properties: bool,
    /// The mapped columns, sorted by column name.
    pub fields: Vec<FieldMapping>,
    /// The contact's primary company (`company_column`), when a contacts mapping syncs it.
    pub company: Option<CompanyAssociation>,
    /// The configuration key of the entry, e.g. `sync.objects[1]`; a built-in default says
    /// `sync.objects (built-in contacts default)`.
    pub key: String,
}

impl ObjectMapping {
    /// Today's `contacts` table, as crm-sync has always synced it: `email`, `first_name` →
    /// `firstname`, `last_name` → `lastname`, both ways with the local side owning them, the
    /// HubSpot id in `contacts.hs_object_id`. Applies when no entry maps contacts.
    pub fn default_contacts() -> Self {
        let field = |column: &str, property: &str| FieldMapping {
            column: ColumnName::trusted(column),
            property: PropertyName::trusted(property),
            flow: Flow::Both(Owner::Local),
            declared: None,
        };
        Self {
            object: ObjectType::Contacts,
            table: TableRef::unqualified("contacts".to_owned()),
            key_column: ColumnName::trusted("id"),
            match_key: MatchKey::Property(PropertyName::trusted("email")),
            hubspot_id: HubSpotIdStore::Column(ColumnName::trusted("hs_object_id")),
            create_properties: false,
            fields: vec![
                field("email", "email"),
                field("first_name", "firstname"),
                field("last_name", "lastname"),
            ],
            // The built-in table syncs `contacts.company_id` through its own engine.
            company: None,
            key: DEFAULT_CONTACTS_KEY.to_owned(),
        }
    }

    /// The configuration key of a field, e.g. `sync.objects[1].fields.plan`.
    pub fn field_key(&self, field: &FieldMapping) -> String {
        format!("{}.fields.{}", self.key, field.column)
    }

    /// The configuration key of the company association, e.g. `sync.objects[1].company_column`.
    pub fn company_key(&self) -> String {
        format!("{}.company_column", self.key)
    }

    /// The field mapped to `property`.
    pub fn field_for(&self, property: &str) -> Option<&FieldMapping> {
        self.fields.iter().find(|f| f.property.as_str() == property)
    }
}

/// The key errors name for the built-in contacts mapping.
pub const DEFAULT_CONTACTS_KEY: &str = "sync.objects (built-in contacts default)";

/// The mappings in effect: the configured ones, plus the built-in default of every object the
/// configuration does not map and that has one (contacts).
pub fn with_defaults(mut configured: Vec<ObjectMapping>) -> Vec<ObjectMapping> {
    if !configured.iter().any(|m| m.object == ObjectType::Contacts) {
        configured.insert(0, ObjectMapping::default_contacts());
    }
    configured
}
