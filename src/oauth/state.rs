//! OAuth `state` values: issued by the install page, consumed by a callback.
//!
//! A state is random (256 bits), good for one callback, for [`STATE_LIFETIME`], and only in
//! the browser that opened the install page: the page also sets a cookie with a random
//! browser nonce, and the state is stored bound to that nonce. The table `oauth_states` keeps
//! SHA-256 hashes of both, never the values. Consuming is one conditional `UPDATE ...
//! RETURNING`, so two callbacks racing with the same state (in one process or several) cannot
//! both win; the reason a state is refused is looked up only after it was.
//!
//! Every time comparison is made with the database's clock, so that processes with skewed
//! clocks agree (the SQL is in `crate::store`).
//!
//! A state is only ever issued to the operator: the install page issues one only to a request
//! carrying the API token or an operator session, and `crm-sync connect` issues one, not bound
//! to a browser, to whoever can write to the database.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::store::{StateBinding, Store, StoreError};

/// How long an install link stays usable.
pub const STATE_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The cookie that binds a state to the browser that asked for it.
pub const BROWSER_COOKIE: &str = "crm_sync_oauth";

/// Length of a state or nonce as sent: 32 random bytes, base64url without padding.
const TOKEN_LEN: usize = 43;

/// States (used or not) are deleted this long after they expired.
const PRUNE_AFTER_SECS: i64 = 24 * 60 * 60;

/// A random value sent to the browser (a state or a browser nonce). Its `Debug` is redacted:
/// a live state in a log line could be replayed.
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimeValue(String);

impl OneTimeValue {
    /// 32 fresh random bytes.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A value received from a browser, when it has the shape of one this service issues
    /// (anything else cannot be ours, and is not worth a database lookup).
    pub fn parse(raw: &str) -> Option<Self> {
        let well_formed = raw.len() == TOKEN_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| Self(raw.to_owned()))
    }

    /// The value, to put into a URL or cookie.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database keeps instead of the value (SHA-256, hex).
    pub fn hash(&self) -> String {
        Sha256::digest(self.0.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Debug for OneTimeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneTimeValue(<redacted>)")
    }
}

/// Why a callback's state was refused. Every variant means: 400, no token call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRejection {
    /// The callback URL has no `state`.
    Missing,
    /// This service never issued it (or it was pruned long ago).
    Unknown,
    /// Issued more than [`STATE_LIFETIME`] ago.
    Expired,
    /// A callback already used it.
    Reused,
    /// Issued to another browser, or the browser sent no (or a different) cookie.
    OtherBrowser,
}

impl StateRejection {
    /// What the user reads on the error page.
    pub fn explanation(self) -> &'static str {
        match self {
            Self::Missing => {
                "The link back from HubSpot carries no state parameter, so it cannot be matched to an install started here."
            }
            Self::Unknown => {
                "The state parameter of this link was not issued by this service (or the link is very old)."
            }
            Self::Expired => {
                "This install link is more than 10 minutes old; install links expire so that a stolen one is useless."
            }
            Self::Reused => {
                "This install link was already used once; each link completes one installation."
            }
            Self::OtherBrowser => {
                "This install was started in another browser (or cookies are blocked): the link only completes in the browser that opened the install page."
            }
        }
    }

    /// A short stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::Reused => "reused",
            Self::OtherBrowser => "other_browser",
        }
    }
}

/// Stores a new state bound to `browser`, valid for [`STATE_LIFETIME`], and prunes states that
/// expired long ago.
pub async fn issue(store: &Store, browser: &OneTimeValue) -> Result<OneTimeValue, StoreError> {
    issue_with(store, StateBinding::Browser(&browser.hash())).await
}

/// Stores a new state bound to no browser, valid for [`STATE_LIFETIME`] and one callback:
/// `crm-sync connect` prints its link on the operator's terminal. Only whoever can write to
/// the database (the operator) can issue one.
pub async fn issue_unbound(store: &Store) -> Result<OneTimeValue, StoreError> {
    issue_with(store, StateBinding::Unbound).await
}

async fn issue_with(store: &Store, binding: StateBinding<'_>) -> Result<OneTimeValue, StoreError> {
    let state = OneTimeValue::generate();
    store
        .insert_oauth_state(
            &state.hash(),
            binding,
            STATE_LIFETIME.as_secs() as i64,
            PRUNE_AFTER_SECS,
        )
        .await?;
    Ok(state)
}

/// Consumes `state` for `browser` (the nonce from the cookie, `None` when the browser sent
/// none): `Ok` exactly once per state, and only for the browser it was issued to (any browser
/// for a state issued on the command line), before it expires. A state refused for another
/// browser stays usable by its own.
pub async fn consume(
    store: &Store,
    state: Option<&str>,
    browser: Option<&OneTimeValue>,
) -> Result<Result<(), StateRejection>, StoreError> {
    let Some(raw) = state.filter(|s| !s.is_empty()) else {
        return Ok(Err(StateRejection::Missing));
    };
    let Some(state) = OneTimeValue::parse(raw) else {
        return Ok(Err(StateRejection::Unknown));
    };
    // Without a cookie no browser-bound state can match; an impossible hash keeps one path.
    let browser_hash = browser.map_or_else(String::new, OneTimeValue::hash);
    if store
        .consume_oauth_state(&state.hash(), &browser_hash)
        .await?
    {
        return Ok(Ok(()));
    }
    let facts = store
        .oauth_state_facts(&state.hash(), &browser_hash)
        .await?;
    Ok(Err(match facts {
        None => StateRejection::Unknown,
        Some(f) if f.used => StateRejection::Reused,
        Some(f) if f.expired => StateRejection::Expired,
        Some(f) if !f.browser_matches => StateRejection::OtherBrowser,
        // It became valid between the two queries: impossible unless clocks jump; refuse.
        Some(_) => StateRejection::Unknown,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_parse_and_others_do_not() {
        let v = OneTimeValue::generate();
        assert_eq!(OneTimeValue::parse(v.expose()), Some(v.clone()));
        assert_ne!(v, OneTimeValue::generate());
        assert_eq!(OneTimeValue::parse("short"), None);
        assert_eq!(OneTimeValue::parse(&"a".repeat(42).replace('a', "<")), None);
        assert!(!format!("{v:?}").contains(v.expose()));
    }
}
