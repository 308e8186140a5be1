//! The sync engine: push (local → HubSpot) and pull (HubSpot → local), run as durable jobs.

pub mod push;
