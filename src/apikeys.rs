//! API keys (SEC-2): scoped bearer tokens for `/api/v1`, stored hashed.
//!
//! A key is shown once, when it is made: `lvk_<id>_<secret>`, where the id
//! (12 hex digits) names the key in lists and audit entries and the secret
//! (32 random bytes, hex) is all that proves it. The store keeps the
//! secret's SHA-256 only — a fast hash is enough for 256 random bits — and
//! compares in constant time. Revoked keys stay listed (and audited) but
//! authenticate nothing; rotation is a new key, then revoking the old.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{Actor, AuditLog};
use crate::store::{Store, StoreError};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET and HEAD.
    Read,
    /// Everything a read key may, and changes.
    Write,
}

/// A key as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339, when revoked.
    pub revoked: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    key: ApiKey,
    secret_sha256: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("no API key {0}")]
    NotFound(String),
    #[error("an API key name must be 1 to 64 printable characters")]
    BadName,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Makes a key; returns it and its token (shown this once, stored nowhere).
pub fn create(
    store: &Store,
    audit: &AuditLog,
    actor: Actor<'_>,
    name: &str,
    scope: Scope,
) -> Result<(ApiKey, String), KeyError> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(KeyError::BadName);
    }
    let id = hex::encode(rand::random::<[u8; 6]>());
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let key = ApiKey {
        id: id.clone(),
        name: name.to_owned(),
        scope,
        created: now(),
        revoked: None,
    };
    let stored = Stored {
        key: key.clone(),
        secret_sha256: hash(&secret),
    };
    store.api_key_put(&id, &serde_json::to_vec(&stored).unwrap_or_default())?;
    audit.append(
        actor,
        "apikey.create",
        &id,
        serde_json::json!({ "name": name, "scope": scope }),
    )?;
    Ok((key, format!("lvk_{id}_{secret}")))
}

/// Every key, revoked ones included, oldest first.
pub fn list(store: &Store) -> Result<Vec<ApiKey>, KeyError> {
    let mut keys: Vec<ApiKey> = store
        .api_keys()?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice::<Stored>(&v).ok())
        .map(|s| s.key)
        .collect();
    keys.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(keys)
}

/// Revokes a key (idempotent); it authenticates nothing from now on.
pub fn revoke(
    store: &Store,
    audit: &AuditLog,
    actor: Actor<'_>,
    id: &str,
) -> Result<ApiKey, KeyError> {
    let bytes = store
        .api_key_get(id)?
        .ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
    let mut s: Stored =
        serde_json::from_slice(&bytes).map_err(|_| KeyError::NotFound(id.to_owned()))?;
    if s.key.revoked.is_none() {
        s.key.revoked = Some(now());
        store.api_key_put(id, &serde_json::to_vec(&s).unwrap_or_default())?;
        audit.append(
            actor,
            "apikey.revoke",
            id,
            serde_json::json!({ "name": s.key.name }),
        )?;
    }
    Ok(s.key)
}

/// The key a bearer token proves, if it is valid and not revoked.
pub fn authenticate(store: &Store, token: &str) -> Option<ApiKey> {
    let rest = token.strip_prefix("lvk_")?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = store.api_key_get(id).ok()??;
    let s: Stored = serde_json::from_slice(&bytes).ok()?;
    let given = hash(secret);
    // Constant time: the comparison reads every byte whatever differs.
    let same = given.len() == s.secret_sha256.len()
        && given
            .bytes()
            .zip(s.secret_sha256.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    (same && s.key.revoked.is_none()).then_some(s.key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn keys_authenticate_until_revoked_and_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let audit = AuditLog::open(store.clone()).unwrap();
        let (key, token) = create(
            &store,
            &audit,
            Actor::System("test"),
            "grafana",
            Scope::Read,
        )
        .unwrap();
        assert_eq!(
            authenticate(&store, &token).map(|k| k.id),
            Some(key.id.clone())
        );
        // Wrong secret, wrong id, garbage: nothing.
        let other = if token.ends_with('0') { '1' } else { '0' };
        let forged = format!("{}{other}", &token[..token.len() - 1]);
        assert!(authenticate(&store, &forged).is_none());
        assert!(authenticate(&store, "lvk_000000000000_00").is_none());
        assert!(authenticate(&store, "Bearer nonsense").is_none());
        // The secret is nowhere in the store.
        let secret = token.rsplit('_').next().unwrap();
        let raw: Vec<u8> = store
            .api_keys()
            .unwrap()
            .into_iter()
            .flat_map(|(_, v)| v)
            .collect();
        assert!(!String::from_utf8_lossy(&raw).contains(secret));
        // Revoked: listed, audited, useless.
        revoke(&store, &audit, Actor::System("test"), &key.id).unwrap();
        assert!(authenticate(&store, &token).is_none());
        assert!(list(&store).unwrap()[0].revoked.is_some());
        assert_eq!(audit.head().0, 2);
        assert!(matches!(
            revoke(&store, &audit, Actor::System("t"), "nope"),
            Err(KeyError::NotFound(_))
        ));
    }
}
