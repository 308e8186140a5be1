//! Identifier newtypes, so that a local id, a HubSpot id, a job id, a lease or a delivery can never
//! be swapped.
//! The HubSpot ones belong to the HubSpot client crate and are re-exported here.

pub use crate::hubspot::ids::{HsObjectId, PortalId};

use serde::{Deserialize, Serialize};
use std::fmt;

/// The primary key of a row in the local `contacts` table.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct ContactId(pub i64);

impl fmt::Display for ContactId {
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
