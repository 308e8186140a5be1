//! The HubSpot OAuth connection as the service keeps it: tokens encrypted in the database,
//! the state of the connection (connected, broken, absent), and how a job tells a broken
//! connection from a passing failure.
//!
//! The HTTP side of OAuth (install page, callbacks) lives in the API; the token calls
//! themselves in [`crate::hubspot`].

pub mod account;
pub use account::disconnect;
mod token_store;

pub use token_store::{
    ConnectionProblem, ConnectionStatus, CredentialError, DbTokenStore, RekeyReport, TokenField,
};
