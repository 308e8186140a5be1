//! Identifier newtypes, so that a local id, a HubSpot id, a job id, a lease or a delivery can never
//! be swapped.
//! The HubSpot ones belong to the HubSpot client crate and are re-exported here.

pub use crate::hubspot::ids::{CompanyId, HsObjectId, PortalId};

use serde::{Deserialize, Serialize};
use std::fmt;

/// The primary key of a row in the local `contacts` table.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct ContactId(pub i64);

impl From<ContactId> for i64 {
    fn from(id: ContactId) -> i64 {
        id.0
    }
}

impl fmt::Display for ContactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The primary key of a row in the local `companies` table (HubSpot's own company id is
/// [`CompanyId`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct LocalCompanyId(pub i64);

impl From<LocalCompanyId> for i64 {
    fn from(id: LocalCompanyId) -> i64 {
        id.0
    }
}

impl fmt::Display for LocalCompanyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A sync job id: the ULID that is also the Apalis task id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub ulid::Ulid);

impl JobId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self(ulid::Ulid::generate())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for JobId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s).map(Self)
    }
}

impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A run's hold on its job (`sync_jobs.lease`): a fresh ULID per run. Progress and final
/// statuses are written only while it still matches, so a run presumed dead cannot overwrite
/// its successor.
///
/// A lease is not a delivery, so the two cannot be passed in each other's place:
///
/// ```compile_fail
/// use crm_sync::ids::{DeliveryId, LeaseId};
/// fn claim(_delivery: &DeliveryId, _lease: &LeaseId) {}
/// let (delivery, lease) = (DeliveryId("d".into()), LeaseId("l".into()));
/// claim(&lease, &delivery);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct LeaseId(pub String);

impl LeaseId {
    /// A fresh lease.
    pub fn generate() -> Self {
        Self(ulid::Ulid::generate().to_string())
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The Apalis task that carries a job (`sync_jobs.delivery`); its id is a ULID, the job's own
/// for the first delivery. A task whose id is not the job's delivery is stale.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct DeliveryId(pub String);

impl From<ulid::Ulid> for DeliveryId {
    fn from(task: ulid::Ulid) -> Self {
        Self(task.to_string())
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An email as both sides compare it: trimmed and lower-cased (all of Unicode, as the
/// databases' `lower()` does on every connection). The key that matches a local contact to a
/// HubSpot one; a blank email is no email, so there is no empty `Email`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct Email(String);

impl Email {
    /// The normalised email of `raw`; `None` when it is blank.
    pub fn parse(raw: &str) -> Option<Self> {
        let trimmed = raw.trim();
        (!trimmed.is_empty()).then(|| Self(trimmed.to_lowercase()))
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The normalised text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn an_email_is_trimmed_and_lower_cased_and_a_blank_one_is_none() {
        let ada = Email::parse("  Ada@Example.COM\t").map(Email::into_string);
        assert_eq!(ada.as_deref(), Some("ada@example.com"));
        let elodie = Email::parse("ÉLODIE@example.fr").map(Email::into_string);
        assert_eq!(elodie.as_deref(), Some("élodie@example.fr"));
        assert_eq!(Email::parse(""), None);
        assert_eq!(Email::parse(" \n "), None);
    }
}
