//! Token keys: generated on first start into a 0600 file, rotated by `palisade keys rotate`.
//!
//! The file holds every key that may still verify a live token. The newest is active
//! (mints); older ones only verify, and are pruned once nothing they minted can still be
//! valid. Key ids are PASERK `k4.lid` identifiers, derived from the key itself, so a
//! token's footer names its key without revealing anything about it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pasetors::keys::{Generate, SymmetricKey};
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::version4::V4;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::timeutil::now_ms;

/// A retired key is kept this long after rotation: longer than any access token lives
/// (`access_ttl` is capped at 15 minutes).
const RETIRED_KEY_KEEP_MS: i64 = 60 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("keys file {path}: {msg}")]
    File { path: String, msg: String },
    #[error("keys file is readable by group or others ({path}); run: chmod 600 {path}")]
    Permissions { path: String },
    #[error("keys file {path} is invalid: {msg}")]
    Invalid { path: String, msg: String },
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    /// Binds tokens to this deployment (the PASETO implicit assertion).
    deployment_id: String,
    active: String,
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    id: String,
    /// Base64 of the 32-byte symmetric key.
    secret: String,
    created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<i64>,
}

pub struct Keyring {
    pub deployment_id: String,
    active: (String, SymmetricKey<V4>),
    verify_only: Vec<(String, SymmetricKey<V4>)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active.0)
            .field("keys", &(1 + self.verify_only.len()))
            .finish()
    }
}

fn key_id(k: &SymmetricKey<V4>) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = Id::from(k).fmt(&mut s);
    s
}

fn new_stored_key() -> Result<StoredKey, String> {
    let k = SymmetricKey::<V4>::generate().map_err(|e| e.to_string())?;
    Ok(StoredKey {
        id: key_id(&k),
        secret: STANDARD.encode(k.as_bytes()),
        created_at: now_ms(),
        retired_at: None,
    })
}

impl Keyring {
    /// Loads the keys file, creating it (0600) with a fresh key if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let _lock = lock_key_file(path)?;
        if !path.exists() {
            let first = new_stored_key().map_err(|msg| file_err(path, msg))?;
            let kf = KeyFile {
                deployment_id: crate::secret::new_id(),
                active: first.id.clone(),
                keys: vec![first],
            };
            write_key_file(path, &kf)?;
            tracing::info!(path = %path.display(), "generated new token keys");
        }
        Self::from_file(&read_key_file(path)?, path)
    }

    fn from_file(kf: &KeyFile, path: &Path) -> Result<Self, KeyError> {
        let invalid = |msg: &str| KeyError::Invalid {
            path: path.display().to_string(),
            msg: msg.to_owned(),
        };
        let mut active = None;
        let mut verify_only = Vec::new();
        for sk in &kf.keys {
            let bytes = STANDARD
                .decode(&sk.secret)
                .map_err(|_| invalid("a key is not base64"))?;
            if bytes.len() != 32 {
                return Err(invalid("a key is not 32 bytes"));
            }
            let key = SymmetricKey::<V4>::from(&bytes).map_err(|_| invalid("bad key"))?;
            if key_id(&key) != sk.id {
                return Err(invalid("a key id does not match its key"));
            }
            if sk.id == kf.active {
                active = Some((sk.id.clone(), key));
            } else {
                verify_only.push((sk.id.clone(), key));
            }
        }
        let active = active.ok_or_else(|| invalid("the active key is missing"))?;
        if kf.deployment_id.len() < 16 {
            return Err(invalid("deployment_id is too short"));
        }
        Ok(Self {
            deployment_id: kf.deployment_id.clone(),
            active,
            verify_only,
        })
    }

    /// Adds a new active key; the previous one verifies until it is pruned.
    /// Returns the new key id.
    pub fn rotate(path: &Path) -> Result<String, KeyError> {
        // Read-modify-write under an exclusive lock: concurrent rotations (two
        // operators, two nodes) each add their key; none is lost.
        let _lock = lock_key_file(path)?;
        let mut kf = read_key_file(path)?;
        let now = now_ms();
        for k in &mut kf.keys {
            if k.id == kf.active {
                k.retired_at = Some(now);
            }
        }
        kf.keys
            .retain(|k| k.retired_at.is_none_or(|r| now - r < RETIRED_KEY_KEEP_MS));
        let fresh = new_stored_key().map_err(|msg| file_err(path, msg))?;
        let id = fresh.id.clone();
        kf.active = id.clone();
        kf.keys.push(fresh);
        write_key_file(path, &kf)?;
        Ok(id)
    }

    pub fn active(&self) -> (&str, &SymmetricKey<V4>) {
        (&self.active.0, &self.active.1)
    }

    pub fn find(&self, id: &str) -> Option<&SymmetricKey<V4>> {
        if self.active.0 == id {
            return Some(&self.active.1);
        }
        self.verify_only
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, key)| key)
    }
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

/// An exclusive advisory lock on `<keys file>.lock`, held until dropped.
fn lock_key_file(path: &Path) -> Result<fs::File, KeyError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    if let Some(dir) = lock_path.parent() {
        fs::create_dir_all(dir).map_err(|e| file_err(path, e))?;
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| file_err(&lock_path, e))?;
    f.lock().map_err(|e| file_err(&lock_path, e))?;
    Ok(f)
}

impl Keyring {
    /// Reads the keys file as it is now (for a running server picking up a rotation).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::from_file(&read_key_file(path)?, path)
    }
}

fn read_key_file(path: &Path) -> Result<KeyFile, KeyError> {
    let meta = fs::metadata(path).map_err(|e| file_err(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.display().to_string(),
        });
    }
    let raw = fs::read(path).map_err(|e| file_err(path, e))?;
    // The parse error never includes the file's content.
    serde_json::from_slice(&raw).map_err(|_| KeyError::Invalid {
        path: path.display().to_string(),
        msg: "not valid JSON of the expected shape".into(),
    })
}

/// Writes atomically: a 0600 temp file in the same directory, fsync, rename.
fn write_key_file(path: &Path, kf: &KeyFile) -> Result<(), KeyError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| file_err(path, e))?;
    let tmp = dir.join(format!(".keys.{}.tmp", crate::secret::random_b64(6)));
    let body = serde_json::to_vec_pretty(kf).map_err(|e| file_err(path, e))?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| file_err(path, e))?;
    f.write_all(&body).map_err(|e| file_err(path, e))?;
    f.sync_all().map_err(|e| file_err(path, e))?;
    fs::rename(&tmp, path).map_err(|e| file_err(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_rotate_and_refuse_loose_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let k1 = Keyring::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let old_id = k1.active().0.to_owned();
        assert!(old_id.starts_with("k4.lid."));

        let new_id = Keyring::rotate(&path).unwrap();
        let k2 = Keyring::load_or_create(&path).unwrap();
        assert_eq!(k2.active().0, new_id);
        assert!(k2.find(&old_id).is_some(), "old key must still verify");
        assert_eq!(k1.deployment_id, k2.deployment_id);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Keyring::load_or_create(&path),
            Err(KeyError::Permissions { .. })
        ));
    }
}
