//! The secrets the service makes for itself when they are not configured: the API token and,
//! on SQLite, the encryption key, each generated once into the data folder and read back at
//! every later start.

use std::path::Path;

use base64::Engine as _;

use crate::config::{ConfigError, DatabaseKind, Settings, decode_key};
use crate::secret::Secret;

/// Whether a secret was read from its file or made just now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOrigin {
    /// From configuration.
    Configured,
    /// From the file in the data folder, made by an earlier start.
    File,
    /// Generated now and written to the data folder.
    Generated,
}

/// The API token: configured, or generated once into `<data_dir>/api-token`.
pub fn resolve_api_token(
    settings: &Settings,
    data_dir: &Path,
) -> Result<(Secret, SecretOrigin), ConfigError> {
    if let Some(token) = &settings.api.token {
        return Ok((token.clone(), SecretOrigin::Configured));
    }
    let (token, origin) = read_or_create(&data_dir.join("api-token"), || random_token(32))?;
    if origin == SecretOrigin::Generated {
        // The token itself never goes to the logs (they are often shipped elsewhere); the
        // file is readable only by its owner.
        tracing::warn!(
            file = %data_dir.join("api-token").display(),
            "generated an API token into that file; send it as 'Authorization: Bearer <token>'. \
             Set api.token (or CRM_SYNC__API__TOKEN) to choose your own for production"
        );
    }
    Ok((token, origin))
}

/// The encryption key for tokens at rest: configured, or (SQLite only) generated once into
/// `<data_dir>/encryption-key`. PostgreSQL without a configured key is refused: the database
/// is shared by hosts that do not share `data/`.
pub fn resolve_encryption_key(
    settings: &Settings,
    data_dir: &Path,
) -> Result<([u8; 32], SecretOrigin), ConfigError> {
    if let Some(key) = &settings.security.encryption_key {
        return Ok((decode_key(key)?, SecretOrigin::Configured));
    }
    if settings.database.kind == DatabaseKind::Postgres {
        return Err(ConfigError::EncryptionKeyRequired);
    }
    let path = data_dir.join("encryption-key");
    let (key, origin) = read_or_create(&path, generate_encryption_key)?;
    if origin == SecretOrigin::Generated {
        tracing::warn!(
            file = %path.display(),
            "generated an encryption key for tokens at rest; keep that file, or set \
             security.encryption_key (base64 of 32 bytes) for production"
        );
    }
    Ok((decode_key(&key)?, origin))
}

/// A fresh `security.encryption_key`: base64 of 32 random bytes (what `crm-sync keygen` prints).
pub fn generate_encryption_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(random_bytes::<32>())
}

fn read_or_create(
    path: &Path,
    make: impl FnOnce() -> String,
) -> Result<(Secret, SecretOrigin), ConfigError> {
    let read_err = |source| ConfigError::SecretFile {
        action: "read",
        path: path.to_owned(),
        source,
    };
    if let Some(existing) = read_existing(path).map_err(read_err)? {
        return Ok((existing, SecretOrigin::File));
    }
    let value = make();
    // Written aside, then linked into place: the file appears whole or not at all, and when two
    // processes start together the loser of the link reads the winner's value.
    match publish(path, &value) {
        Ok(()) => Ok((Secret::new(value), SecretOrigin::Generated)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_existing(path)
            .map_err(read_err)?
            .map(|s| (s, SecretOrigin::File))
            .ok_or_else(|| {
                read_err(std::io::Error::other(
                    "another process created it empty; delete it and start again",
                ))
            }),
        Err(source) => Err(ConfigError::SecretFile {
            action: "write",
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_existing(path: &Path) -> std::io::Result<Option<Secret>> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(Secret::new(s.trim()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn publish(path: &Path, value: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("secret");
    let aside = dir.join(format!(
        ".{name}.{}.{}",
        std::process::id(),
        random_token(6)
    ));
    write_private(&aside, value)?;
    let linked = std::fs::hard_link(&aside, path);
    let _ = std::fs::remove_file(&aside);
    linked
}

fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(value.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::fill(&mut bytes[..]);
    bytes
}

fn random_token(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::fill(&mut bytes[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{dir_with, env};
    use std::collections::HashMap;

    #[test]
    fn generated_secrets_are_kept_in_the_data_folder() {
        let dir = dir_with(None);
        let s = Settings::load(dir.path(), &HashMap::new()).unwrap();
        let data = dir.path().join("data");
        let (first, origin) = resolve_api_token(&s, &data).unwrap();
        assert_eq!(origin, SecretOrigin::Generated);
        let (again, origin) = resolve_api_token(&s, &data).unwrap();
        assert_eq!(origin, SecretOrigin::File);
        assert_eq!(first.expose(), again.expose());
        assert!(first.expose().len() >= 32);
        let (key, origin) = resolve_encryption_key(&s, &data).unwrap();
        assert_eq!(origin, SecretOrigin::Generated);
        assert_eq!(resolve_encryption_key(&s, &data).unwrap().0, key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(data.join("api-token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "only the owner may read the token");
        }
    }

    #[test]
    fn processes_starting_together_agree_on_one_generated_token() {
        for _ in 0..20 {
            let dir = dir_with(None);
            let s = Settings::load(dir.path(), &HashMap::new()).unwrap();
            let data = dir.path().join("data");
            let tokens: Vec<String> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..8)
                    .map(|_| scope.spawn(|| resolve_api_token(&s, &data).map(|t| t.0)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap().unwrap().expose().to_owned())
                    .collect()
            });
            assert!(tokens.iter().all(|t| t == &tokens[0]), "{tokens:?}");
            let leftovers = std::fs::read_dir(&data).unwrap().count();
            assert_eq!(leftovers, 1, "only the token file remains");
        }
    }

    #[test]
    fn postgres_needs_a_configured_encryption_key_and_sqlite_generates_one() {
        let dir = dir_with(None);
        let data = dir.path().join("data");
        let pg = [("DATABASE_URL", "postgres://u@db.local/crm")];
        let s = Settings::load(dir.path(), &env(&pg)).unwrap();
        let e = resolve_encryption_key(&s, &data).expect_err("refused");
        assert!(matches!(e, ConfigError::EncryptionKeyRequired), "{e}");
        assert!(e.to_string().contains("crm-sync keygen"), "{e}");
        assert!(!data.join("encryption-key").exists(), "nothing generated");
        let key = generate_encryption_key();
        let s = Settings::load(
            dir.path(),
            &env(&[pg[0], ("CRM_SYNC__SECURITY__ENCRYPTION_KEY", &key)]),
        )
        .unwrap();
        let (_, origin) = resolve_encryption_key(&s, &data).unwrap();
        assert_eq!(origin, SecretOrigin::Configured);
        assert_ne!(generate_encryption_key(), key, "fresh each time");
        let s = Settings::load(dir.path(), &HashMap::new()).unwrap();
        let (_, origin) = resolve_encryption_key(&s, &data).unwrap();
        assert_eq!(origin, SecretOrigin::Generated);
    }

    #[test]
    fn a_configured_token_is_used_as_is() {
        let dir = dir_with(None);
        let s = Settings::load(dir.path(), &env(&[("CRM_SYNC__API__TOKEN", "my-token")])).unwrap();
        let (token, origin) = resolve_api_token(&s, &dir.path().join("data")).unwrap();
        assert_eq!(
            (token.expose(), origin),
            ("my-token", SecretOrigin::Configured)
        );
        assert!(!dir.path().join("data/api-token").exists());
    }
}
