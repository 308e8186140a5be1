//! HubSpot's v3 request signature (`X-HubSpot-Signature-v3`), checked exactly as HubSpot
//! specifies it:
//!
//! 1. refuse a request whose `X-HubSpot-Request-Timestamp` (ms) is more than 5 minutes old
//!    (and, against replays with a forged clock, more than 5 minutes in the future);
//! 2. in the full request URI (scheme, host, path, query in original order) decode only the
//!    percent-sequences HubSpot lists (`%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B`);
//! 3. HMAC-SHA256, keyed with the app's client secret, over
//!    `method + uri + body + timestamp` (UTF-8), base64-encoded;
//! 4. compare with the header in constant time.

use crate::secret::Secret;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};

/// The header carrying the v3 signature.
pub const SIGNATURE_HEADER: &str = "X-HubSpot-Signature-v3";
/// The header carrying the time HubSpot signed the request, in ms since the epoch.
pub const TIMESTAMP_HEADER: &str = "X-HubSpot-Request-Timestamp";
/// How far the signing time may be from now, either way (HubSpot's SDKs use 300,000 ms).
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

/// The sequences HubSpot decodes before signing; any other `%XX` stays as it is.
const DECODED: [(&str, char); 12] = [
    ("3A", ':'),
    ("2F", '/'),
    ("3F", '?'),
    ("40", '@'),
    ("21", '!'),
    ("24", '$'),
    ("27", '\''),
    ("28", '('),
    ("29", ')'),
    ("2A", '*'),
    ("2C", ','),
    ("3B", ';'),
];

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a request's signature was refused. Every variant means: answer 401, change nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-HubSpot-Signature-v3` header.
    #[error("the X-HubSpot-Signature-v3 header is missing")]
    MissingSignature,
    /// No `X-HubSpot-Request-Timestamp` header.
    #[error("the X-HubSpot-Request-Timestamp header is missing")]
    MissingTimestamp,
    /// The timestamp is not a whole number of milliseconds.
    #[error("the X-HubSpot-Request-Timestamp header is not a number of milliseconds: {0:?}")]
    InvalidTimestamp(String),
    /// Signed more than 5 minutes ago.
    #[error("the request was signed {age_ms} ms ago, more than the 300000 ms allowed")]
    Stale {
        /// How long ago, in ms.
        age_ms: i64,
    },
    /// Signed more than 5 minutes in the future.
    #[error(
        "the request claims to be signed {ahead_ms} ms in the future, more than the 300000 ms allowed"
    )]
    FromTheFuture {
        /// How far ahead, in ms.
        ahead_ms: i64,
    },
    /// The signature does not match the request.
    #[error("the X-HubSpot-Signature-v3 signature does not match the request")]
    Mismatch,
}

/// Checks a request's v3 signature. `uri` is the full URI HubSpot called (the service
/// rebuilds it from `server.public_url` + path and query); `body` the raw bytes received;
/// the headers as received (`None` when absent); `now` the current time.
pub fn verify_v3(
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    client_secret: &Secret,
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let signature = signature_header.ok_or(SignatureError::MissingSignature)?;
    let timestamp = timestamp_header.ok_or(SignatureError::MissingTimestamp)?;
    let signed_at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::InvalidTimestamp(timestamp.chars().take(40).collect()))?;
    let now_ms = now.timestamp_millis();
    let age_ms = now_ms.saturating_sub(signed_at);
    if age_ms > MAX_SKEW_MS {
        return Err(SignatureError::Stale { age_ms });
    }
    if -age_ms > MAX_SKEW_MS {
        return Err(SignatureError::FromTheFuture { ahead_ms: -age_ms });
    }
    let Ok(claimed) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return Err(SignatureError::Mismatch);
    };
    let mut mac = keyed(client_secret);
    mac.update(method.as_bytes());
    mac.update(canonical_uri(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    // verify_slice compares in constant time (and refuses a tag of the wrong length).
    mac.verify_slice(&claimed)
        .map_err(|_| SignatureError::Mismatch)
}

/// The v3 signature of a request, as HubSpot computes it: for tests, and for anyone sending
/// webhooks to this service.
pub fn sign_v3(
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp_ms: i64,
    client_secret: &Secret,
) -> String {
    let mut mac = keyed(client_secret);
    mac.update(method.as_bytes());
    mac.update(canonical_uri(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp_ms.to_string().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn keyed(client_secret: &Secret) -> HmacSha256 {
    // HMAC accepts keys of any length; an empty MAC input is the only way this could fail.
    <HmacSha256 as KeyInit>::new_from_slice(client_secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

/// The URI as HubSpot signs it: only the listed `%XX` sequences decoded (hex digits in either
/// case, as percent-encoding is case-insensitive), everything else byte for byte.
pub fn canonical_uri(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let decoded = after.get(..2).and_then(|hex| {
            DECODED
                .iter()
                .find(|(code, _)| code.eq_ignore_ascii_case(hex))
                .map(|(_, c)| *c)
        });
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[2..];
            }
            None => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::canonical_uri;

    #[test]
    fn only_the_listed_sequences_are_decoded() {
        assert_eq!(
            canonical_uri("https://x.io/a%3Ab%2fc?q=%40me%20you%2A%25"),
            "https://x.io/a:b/c?q=@me%20you*%25"
        );
        assert_eq!(
            canonical_uri("https://x.io/%21%24%27%28%29%2C%3B%3F"),
            "https://x.io/!$'(),;?"
        );
    }

    #[test]
    fn a_stray_percent_is_kept_and_never_panics() {
        assert_eq!(canonical_uri("https://x.io/100%"), "https://x.io/100%");
        assert_eq!(canonical_uri("https://x.io/%3"), "https://x.io/%3");
        assert_eq!(canonical_uri("https://x.io/%é%3a"), "https://x.io/%é:");
        assert_eq!(canonical_uri("%%3A"), "%:");
    }
}
