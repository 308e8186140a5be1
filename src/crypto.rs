//! Encryption of secrets at rest (the HubSpot OAuth tokens) with AES-256-GCM.
//!
//! A sealed value is self-describing, so that keys can be rotated without a migration:
//!
//! ```text
//! version (1 byte, 0x01) | key id (4 bytes) | nonce (12 bytes) | ciphertext + GCM tag (16 bytes)
//! ```
//!
//! - The key id is a fingerprint of the key (the first 4 bytes of a domain-separated SHA-256),
//!   so decryption picks the right key among the current and previous ones, and a value sealed
//!   under a key that is not configured is reported as such instead of failing obscurely.
//! - The nonce is random for every encryption (96 bits from a CSPRNG). The service seals two
//!   tokens per refresh, every ~30 minutes: far below the 2^32 messages per key that random
//!   96-bit nonces allow.
//! - The header and a caller-chosen context (e.g. portal id and column name) are the associated
//!   data: a value copied to another row or column, or with an edited header, fails to open.
//!
//! Wrong keys and altered values are always a [`CryptoError`], never garbage: GCM authenticates
//! the ciphertext before anything is returned.

use crate::secret::Secret;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::fmt;

/// The config key of the current encryption key.
pub const ENCRYPTION_KEY_SETTING: &str = "security.encryption_key";
/// The config key of the keys that may still open older values (rotation).
pub const PREVIOUS_KEYS_SETTING: &str = "security.previous_encryption_keys";

/// Length of a key in bytes (AES-256).
pub const KEY_LEN: usize = 32;
/// The format version written by this module.
const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN;
/// The shortest sealed value: header, nonce and tag around an empty plaintext.
const MIN_SEALED_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// Separates the key fingerprint from any other use of SHA-256 over the key.
const KEY_ID_DOMAIN: &[u8] = b"crm-sync token key id v1\0";

/// Why a key could not be used, or a value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// A configured key is not base64.
    #[error(
        "{setting} is not valid base64 ({reason}); it must be 32 random bytes in base64, \
         e.g. the output of `openssl rand -base64 32` (see docs/security.md)"
    )]
    KeyNotBase64 {
        /// The config key, e.g. `security.encryption_key` or `security.previous_encryption_keys[0]`.
        setting: String,
        /// What the decoder said.
        reason: String,
    },
    /// A configured key does not decode to 32 bytes.
    #[error(
        "{setting} decodes to {len} bytes, but AES-256 needs exactly 32; generate one with \
         `openssl rand -base64 32` (see docs/security.md)"
    )]
    KeyWrongLength {
        /// The config key.
        setting: String,
        /// How many bytes it decoded to.
        len: usize,
    },
    /// The value was sealed under a key that is neither the current nor a previous key.
    #[error(
        "the stored value was encrypted with key {key_id}, but the configured keys are {configured}: \
         set security.encryption_key to the key it was written with, or list that key in \
         security.previous_encryption_keys (see docs/security.md)"
    )]
    UnknownKey {
        /// The fingerprint of the key the value was sealed with.
        key_id: KeyId,
        /// The fingerprints of the configured keys, current first.
        configured: String,
    },
    /// The value does not authenticate: altered, moved to another row or column, or (with
    /// odds of 2^-32) sealed under a different key with the same fingerprint.
    #[error(
        "the stored value does not decrypt under key {key_id}: it was altered or copied from \
         another row or column"
    )]
    Tampered {
        /// The fingerprint named in the value.
        key_id: KeyId,
    },
    /// The bytes are not a sealed value of a known version.
    #[error("the stored value is not an encrypted token: {0}")]
    Malformed(&'static str),
    /// The cipher refused to encrypt (only possible for absurdly large inputs).
    #[error("encryption failed")]
    EncryptionFailed,
}

/// The fingerprint of a key, as stored in every value it sealed. Shown in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A 256-bit key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey([u8; KEY_LEN]);

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey(id {})", self.id())
    }
}

impl EncryptionKey {
    /// A fresh random key (from the thread-local CSPRNG, seeded by the operating system).
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// The key from raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses a config value: base64 (standard or URL-safe, padding optional) of 32 bytes;
    /// surrounding whitespace (e.g. a trailing newline in a key file) is ignored. `setting`
    /// names the config key in the error.
    pub fn from_base64(value: &Secret, setting: &str) -> Result<Self, CryptoError> {
        let text = value.expose().trim();
        let decoded = decode_base64(text).map_err(|reason| CryptoError::KeyNotBase64 {
            setting: setting.to_owned(),
            reason,
        })?;
        let bytes: [u8; KEY_LEN] =
            decoded
                .as_slice()
                .try_into()
                .map_err(|_| CryptoError::KeyWrongLength {
                    setting: setting.to_owned(),
                    len: decoded.len(),
                })?;
        Ok(Self(bytes))
    }

    /// The key as standard base64, the form config files and `data/encryption-key` hold.
    pub fn to_base64(&self) -> Secret {
        Secret::new(base64::engine::general_purpose::STANDARD.encode(self.0))
    }

    /// The key's fingerprint.
    pub fn id(&self) -> KeyId {
        let digest = Sha256::new()
            .chain_update(KEY_ID_DOMAIN)
            .chain_update(self.0)
            .finalize();
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        KeyId(id)
    }
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut first_error = None;
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        match engine.decode(text) {
            Ok(bytes) => return Ok(bytes),
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    Err(first_error.unwrap_or_default())
}

/// A key ready to use.
struct LoadedKey {
    id: KeyId,
    cipher: Aes256Gcm,
}

impl LoadedKey {
    fn new(key: &EncryptionKey) -> Self {
        Self {
            id: key.id(),
            cipher: Aes256Gcm::new(&key.0.into()),
        }
    }
}

/// A value opened by [`TokenCipher::open`].
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// The plaintext.
    pub plaintext: Vec<u8>,
    /// True when it was sealed under a previous key: seal it again to finish a rotation.
    pub stale_key: bool,
}

/// Seals values under the current key and opens values sealed under the current or a
/// previous key. Cheap to share behind an `Arc`.
pub struct TokenCipher {
    current: LoadedKey,
    previous: Vec<LoadedKey>,
}

impl fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCipher")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self.previous.iter().map(|k| k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl TokenCipher {
    /// A cipher sealing under `current` and also opening values sealed under `previous`
    /// (a previous key equal to the current one is ignored).
    pub fn new(current: &EncryptionKey, previous: &[EncryptionKey]) -> Self {
        let current = LoadedKey::new(current);
        let mut loaded: Vec<LoadedKey> = Vec::with_capacity(previous.len());
        for key in previous {
            let key = LoadedKey::new(key);
            if key.id != current.id && loaded.iter().all(|k| k.id != key.id) {
                loaded.push(key);
            }
        }
        Self {
            current,
            previous: loaded,
        }
    }

    /// The cipher from config values: `security.encryption_key` and
    /// `security.previous_encryption_keys`, both base64; errors name the offending key.
    pub fn from_config(current: &Secret, previous: &[Secret]) -> Result<Self, CryptoError> {
        let current = EncryptionKey::from_base64(current, ENCRYPTION_KEY_SETTING)?;
        let previous = previous
            .iter()
            .enumerate()
            .map(|(i, key)| {
                EncryptionKey::from_base64(key, &format!("{PREVIOUS_KEYS_SETTING}[{i}]"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(&current, &previous))
    }

    /// The fingerprint of the key new values are sealed with.
    pub fn current_key_id(&self) -> KeyId {
        self.current.id
    }

    /// Encrypts `plaintext` under the current key with a fresh nonce, bound to `context`
    /// (which must be given again, identical, to open it).
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let header = header(self.current.id);
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = associated_data(&header, context);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::EncryptionFailed)?;
        let mut sealed = Vec::with_capacity(HEADER_LEN + NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&header);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Decrypts a value sealed by [`TokenCipher::seal`] with the same `context`.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Opened, CryptoError> {
        let parts = Parts::parse(sealed)?;
        let key = self.key(parts.key_id)?;
        let aad = associated_data(parts.header, context);
        let plaintext = key
            .cipher
            .decrypt(
                Nonce::from_slice(parts.nonce),
                Payload {
                    msg: parts.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Tampered {
                key_id: parts.key_id,
            })?;
        Ok(Opened {
            plaintext,
            stale_key: key.id != self.current.id,
        })
    }

    /// Seals a secret string (a token).
    pub fn seal_secret(&self, secret: &Secret, context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal(secret.expose().as_bytes(), context)
    }

    /// Opens a value sealed by [`TokenCipher::seal_secret`]; also says whether it was sealed
    /// under a previous key.
    pub fn open_secret(
        &self,
        sealed: &[u8],
        context: &[u8],
    ) -> Result<(Secret, bool), CryptoError> {
        let opened = self.open(sealed, context)?;
        let text = String::from_utf8(opened.plaintext)
            .map_err(|_| CryptoError::Malformed("the decrypted token is not UTF-8"))?;
        Ok((Secret::new(text), opened.stale_key))
    }

    /// True when `sealed` names the current key (it does not check that it opens).
    pub fn is_sealed_with_current_key(&self, sealed: &[u8]) -> bool {
        Parts::parse(sealed).is_ok_and(|parts| parts.key_id == self.current.id)
    }

    fn key(&self, id: KeyId) -> Result<&LoadedKey, CryptoError> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownKey {
                key_id: id,
                configured: std::iter::once(&self.current)
                    .chain(&self.previous)
                    .map(|k| k.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

fn header(key_id: KeyId) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[0] = VERSION;
    header[1..].copy_from_slice(&key_id.0);
    header
}

/// The header, then the context: both authenticated, neither stored twice.
fn associated_data(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

/// The fields of a sealed value.
struct Parts<'a> {
    header: &'a [u8],
    key_id: KeyId,
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

impl<'a> Parts<'a> {
    fn parse(sealed: &'a [u8]) -> Result<Self, CryptoError> {
        if sealed.len() < MIN_SEALED_LEN {
            return Err(CryptoError::Malformed("too short"));
        }
        if sealed[0] != VERSION {
            return Err(CryptoError::Malformed("unknown format version"));
        }
        let (header, rest) = sealed.split_at(HEADER_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let mut key_id = [0; KEY_ID_LEN];
        key_id.copy_from_slice(&header[1..]);
        Ok(Self {
            header,
            key_id: KeyId(key_id),
            nonce,
            ciphertext,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> EncryptionKey {
        EncryptionKey::from_bytes([byte; KEY_LEN])
    }

    #[test]
    fn a_sealed_value_round_trips_and_hides_the_plaintext() {
        let cipher = TokenCipher::new(&key(1), &[]);
        let sealed = cipher.seal(b"pat-na1-secret-token", b"ctx").unwrap();
        assert!(
            !sealed
                .windows(b"secret".len())
                .any(|w| w == b"secret".as_slice())
        );
        let opened = cipher.open(&sealed, b"ctx").unwrap();
        assert_eq!(opened.plaintext, b"pat-na1-secret-token");
        assert!(!opened.stale_key);
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let cipher = TokenCipher::new(&key(1), &[]);
        let a = cipher.seal(b"same", b"ctx").unwrap();
        let b = cipher.seal(b"same", b"ctx").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let cipher = TokenCipher::new(&key(1), &[]);
        let sealed = cipher.seal(b"token", b"ctx").unwrap();
        for i in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 0x01;
            assert!(
                cipher.open(&altered, b"ctx").is_err(),
                "byte {i} altered but opened"
            );
        }
    }

    #[test]
    fn another_context_does_not_open() {
        let cipher = TokenCipher::new(&key(1), &[]);
        let sealed = cipher.seal(b"token", b"portal 1 access").unwrap();
        let err = cipher.open(&sealed, b"portal 2 access").unwrap_err();
        assert_eq!(
            err,
            CryptoError::Tampered {
                key_id: key(1).id()
            }
        );
    }

    #[test]
    fn a_wrong_key_is_named_not_garbage() {
        let sealed = TokenCipher::new(&key(1), &[]).seal(b"t", b"c").unwrap();
        let err = TokenCipher::new(&key(2), &[])
            .open(&sealed, b"c")
            .unwrap_err();
        let CryptoError::UnknownKey { key_id, configured } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*key_id, key(1).id());
        assert_eq!(*configured, key(2).id().to_string());
        assert!(
            err.to_string()
                .contains("security.previous_encryption_keys")
        );
    }

    #[test]
    fn a_previous_key_still_opens_and_is_reported_stale() {
        let old = TokenCipher::new(&key(1), &[]);
        let sealed = old.seal(b"t", b"c").unwrap();
        let rotated = TokenCipher::new(&key(2), &[key(1)]);
        let opened = rotated.open(&sealed, b"c").unwrap();
        assert_eq!(opened.plaintext, b"t");
        assert!(opened.stale_key);
        assert!(!rotated.is_sealed_with_current_key(&sealed));
        let resealed = rotated.seal(&opened.plaintext, b"c").unwrap();
        assert!(rotated.is_sealed_with_current_key(&resealed));
        assert!(!rotated.open(&resealed, b"c").unwrap().stale_key);
    }

    #[test]
    fn short_or_unversioned_bytes_are_malformed() {
        let cipher = TokenCipher::new(&key(1), &[]);
        assert!(matches!(
            cipher.open(b"plain token", b"c"),
            Err(CryptoError::Malformed(_))
        ));
        let mut sealed = cipher.seal(b"t", b"c").unwrap();
        sealed[0] = 9;
        assert_eq!(
            cipher.open(&sealed, b"c"),
            Err(CryptoError::Malformed("unknown format version"))
        );
    }

    #[test]
    fn config_keys_are_base64_of_32_bytes() {
        let good = EncryptionKey::generate().to_base64();
        let padded_newline = Secret::new(format!("{}\n", good.expose()));
        assert!(TokenCipher::from_config(&padded_newline, &[]).is_ok());

        let err = TokenCipher::from_config(&Secret::new("not base64!"), &[]).unwrap_err();
        assert!(matches!(err, CryptoError::KeyNotBase64 { .. }), "{err:?}");
        assert!(err.to_string().starts_with("security.encryption_key "));

        let short = Secret::new(base64::engine::general_purpose::STANDARD.encode([7u8; 16]));
        let err = TokenCipher::from_config(&good, &[short]).unwrap_err();
        assert_eq!(
            err,
            CryptoError::KeyWrongLength {
                setting: "security.previous_encryption_keys[0]".into(),
                len: 16
            }
        );
    }

    #[test]
    fn a_key_survives_its_base64_form_and_debug_hides_it() {
        let key = EncryptionKey::generate();
        let back = EncryptionKey::from_base64(&key.to_base64(), ENCRYPTION_KEY_SETTING).unwrap();
        assert_eq!(back, key);
        let shown = format!("{key:?}");
        assert!(!shown.contains(key.to_base64().expose()));
        assert!(shown.contains(&key.id().to_string()));
    }
}
