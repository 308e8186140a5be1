//! HubSpot's identifiers as newtypes, so that a contact id, a company id and an account id can
//! never be swapped with each other or with a local id. With the `sqlx` feature they are stored as their
//! inner value.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A HubSpot record id (`hs_object_id`); HubSpot sends it as a string of digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
#[serde(transparent)]
pub struct HsObjectId(pub String);

impl fmt::Display for HsObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for HsObjectId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// A HubSpot account (portal / hub) id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
#[serde(transparent)]
pub struct PortalId(pub i64);

impl fmt::Display for PortalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A HubSpot company's record id (`hs_object_id` of object type `0-2`): kept apart from
/// [`HsObjectId`], which names contacts, so that a company id can never be sent as a contact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
#[serde(transparent)]
pub struct CompanyId(pub String);

impl fmt::Display for CompanyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for CompanyId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}
