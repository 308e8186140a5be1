//! A string that must never reach a log line or `Debug` output.

use serde::{Deserialize, Deserializer};
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroize as _;

/// A secret value (token, client secret, key). `Debug` and `Display` print `[redacted]`; its
/// memory is wiped when dropped. It has no `==`: comparing secrets goes through
/// [`Secret::matches`], whose time does not depend on where they differ:
///
/// ```compile_fail
/// use crm_sync_hubspot::secret::Secret;
/// let _ = Secret::new("a") == Secret::new("a");
/// ```
#[derive(Clone)]
pub struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        // A freed buffer is reused by later allocations (and lands in core dumps): wipe it.
        self.0.zeroize();
    }
}

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must send or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` in time independent of where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Hides the password of a URL such as `postgres://user:pw@host/db`, and the values of query
/// parameters that carry secrets (`?password=`, `sslpassword`, `access_token`, `token`, `key`,
/// `secret`, ...), for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparsable url>".to_owned();
    };
    let hides_password = parsed.password().is_some();
    if hides_password {
        let _ = parsed.set_password(Some("redacted"));
    }
    let hides_query = redact_query(&mut parsed);
    if hides_password || hides_query {
        parsed.to_string()
    } else {
        url.to_owned()
    }
}

/// Whether a query parameter's name says its value is a secret (any case).
fn is_secret_param(name: &str) -> bool {
    const MARKERS: [&str; 7] = [
        "pass",
        "pwd",
        "token",
        "secret",
        "key",
        "credential",
        "signature",
    ];
    let name = name.to_ascii_lowercase();
    MARKERS.iter().any(|marker| name.contains(marker))
}

/// Replaces the value of every secret-bearing query parameter; whether any was.
fn redact_query(url: &mut url::Url) -> bool {
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    if !pairs.iter().any(|(name, _)| is_secret_param(name)) {
        return false;
    }
    let mut query = url.query_pairs_mut();
    query.clear();
    for (name, value) in &pairs {
        let shown = if is_secret_param(name) {
            "redacted"
        } else {
            value
        };
        query.append_pair(name, shown);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert!(s.matches("hunter2"));
        assert!(!s.matches("hunter3"));
    }

    #[test]
    fn redact_url_hides_secrets_in_query_parameters() {
        let r = redact_url(
            "postgres://app@db.local/crm?sslmode=require&password=pw1&sslpassword=pw2\
             &access_token=tk3&Token=tk4&key=k5&secret=s6&application_name=crm",
        );
        for hidden in ["pw1", "pw2", "tk3", "tk4", "k5", "s6"] {
            assert!(!r.contains(hidden), "{hidden}: {r}");
        }
        assert!(
            r.contains("sslmode=require") && r.contains("application_name=crm"),
            "{r}"
        );
        assert!(r.contains("password=redacted"), "{r}");
        let r = redact_url("https://u:pw@h/x?api_key=abc");
        assert!(!r.contains("pw") && !r.contains("abc"), "{r}");
        let plain = "postgres://app@db.local/crm?sslmode=require";
        assert_eq!(redact_url(plain), plain, "nothing to hide: unchanged");
    }

    #[test]
    fn redact_url_hides_only_the_password() {
        let r = redact_url("postgres://app:s3cret@db.local:5432/crm");
        assert!(!r.contains("s3cret"));
        assert!(r.contains("app:"));
        assert!(r.contains("db.local:5432/crm"));
    }
}
