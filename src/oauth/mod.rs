//! The HubSpot OAuth connection as the service keeps it: the install flow and its `state`
//! values, which account the service is tied to, tokens encrypted in the database, the state
//! of the connection (connected, broken, absent), and how a job tells a broken connection
//! from a passing failure.
//!
//! The HTTP routes (`crate::api::oauth_routes`) are thin handlers over [`install`]; the token
//! calls and the refreshing token manager belong to the client ([`crate::hubspot`]).

pub mod account;
pub mod install;
pub mod state;
mod token_store;

pub use account::disconnect;
pub use token_store::{
    ConnectionProblem, ConnectionStatus, CredentialError, DbTokenStore, RekeyReport, TokenField,
};
