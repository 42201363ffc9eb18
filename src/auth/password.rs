//! Password hashing with argon2id at OWASP's recommended parameters
//! (m = 19 MiB, t = 2, p = 1).
//!
//! Hashing is CPU- and memory-heavy on purpose, so it runs on the blocking pool behind a
//! semaphore: a burst of logins queues instead of exhausting memory. An unknown user is
//! verified against a dummy hash made at start-up, so it costs the same as a wrong
//! password and cannot be told apart by timing.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;
use tokio::sync::Semaphore;

use crate::secret::{ExposeSecret, SecretString};

pub const MIN_PASSWORD_LEN: usize = 8;
/// Longer inputs are refused outright; nobody types 1 KiB passwords.
pub const MAX_PASSWORD_LEN: usize = 1024;

fn argon() -> Argon2<'static> {
    // Infallible for these constants; checked by the unit test below.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be between {MIN_PASSWORD_LEN} and {MAX_PASSWORD_LEN} characters")]
    Length,
    #[error("password hashing failed")]
    Hash,
}

/// Hashes a new password (CLI, admin). Blocking: call from a blocking context.
pub fn hash_password(password: &SecretString) -> Result<String, PasswordError> {
    let pw = password.expose_secret();
    if pw.chars().count() < MIN_PASSWORD_LEN || pw.len() > MAX_PASSWORD_LEN {
        return Err(PasswordError::Length);
    }
    let mut salt_bytes = [0u8; 16];
    getrandom::fill(&mut salt_bytes).map_err(|_| PasswordError::Hash)?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|_| PasswordError::Hash)?;
    argon()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hash)
}

/// Blocking verification; a malformed stored hash verifies as false.
pub fn verify_password_blocking(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[derive(Clone)]
pub struct PasswordVerifierPool {
    dummy_hash: Arc<String>,
    permits: Arc<Semaphore>,
}

impl PasswordVerifierPool {
    pub fn new() -> Self {
        let dummy = SecretString::from(crate::secret::random_b64(24));
        let dummy_hash = hash_password(&dummy).unwrap_or_default();
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            dummy_hash: Arc::new(dummy_hash),
            permits: Arc::new(Semaphore::new(n * 2)),
        }
    }

    /// Verifies `password` against `phc`, or against the dummy hash when there is no
    /// user, so both paths do the same work.
    pub async fn verify(&self, password: &SecretString, phc: Option<&str>) -> bool {
        let pw = password.expose_secret();
        let oversized = pw.len() > MAX_PASSWORD_LEN;
        let real = phc.is_some() && !oversized;
        let hash = match phc {
            Some(h) if !oversized => h.to_owned(),
            _ => (*self.dummy_hash).clone(),
        };
        // Oversized inputs are checked against the dummy with a bounded prefix.
        let input: String = if oversized {
            pw.chars().take(MAX_PASSWORD_LEN).collect()
        } else {
            pw.to_owned()
        };
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let ok = tokio::task::spawn_blocking(move || verify_password_blocking(&input, &hash))
            .await
            .unwrap_or(false);
        ok && real
    }
}

impl Default for PasswordVerifierPool {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owasp_parameters_and_roundtrip() {
        let p = Params::new(19 * 1024, 2, 1, None).unwrap();
        assert_eq!(p.m_cost(), 19456);
        let h = hash_password(&SecretString::from("correct horse")).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password_blocking("correct horse", &h));
        assert!(!verify_password_blocking("wrong horse", &h));
        assert!(!verify_password_blocking("x", "not a phc string"));
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(hash_password(&SecretString::from("short")).is_err());
    }
}
