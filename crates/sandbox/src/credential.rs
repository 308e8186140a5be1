//! The sandbox's own credentials (private-app token, OAuth client secret): kept out of `Debug`
//! output and checked in constant time, as HubSpot checks them. A type of its own because the
//! sandbox shares no code with the client it stands in for.

use std::fmt;
use subtle::ConstantTimeEq;

/// A credential the sandbox issued or was given.
#[derive(Clone)]
pub(crate) struct Credential(String);

impl Credential {
    /// Wraps a value.
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, to hand to whoever configures a client (tests, the start line).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Whether a request presented this credential; time independent of where they differ.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential([redacted])")
    }
}
