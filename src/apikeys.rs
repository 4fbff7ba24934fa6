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

/// What a key may do. Each scope may do everything the one before it
/// may (`Read < Write < Admin`).
///
/// The web UI's users (issue 15) get roles that map onto these: `readonly`
/// is `read`; `admin` and `owner` are `admin` (an owner also manages
/// users). Whatever manages who may do what — API keys now, users then —
/// needs `admin`: a key that may announce routes is not one that may mint
/// keys or revoke the operators' own.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET and HEAD.
    Read,
    /// Everything a read key may, and changes: announce and withdraw
    /// mitigations.
    Write,
    /// Everything a write key may, and managing API keys (make, list,
    /// revoke) and reading the running configuration.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
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
    #[error(
        "an API key name must be 1 to 64 printable ASCII characters (letters, digits, \
         punctuation, spaces inside), without control, bidirectional or zero-width characters"
    )]
    BadName,
}

/// Whether `name` may name a key: 1 to 64 printable ASCII characters
/// (U+0020 to U+007E), not starting or ending with a space. Names are
/// shown in terminals, the audit chain and the web UI: no control
/// characters (a forged log line), no bidirectional overrides or
/// zero-width characters (a name that reads as another).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && !name.starts_with(' ')
        && !name.ends_with(' ')
}

/// Why a bearer token proved nothing (for the failure's count and audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header.
    Missing,
    /// Not a levee key's form (`lvk_<12 hex>_<secret>`).
    Malformed,
    /// No key with that id.
    Unknown,
    /// The key exists but the secret is not its.
    BadSecret,
    /// The key was revoked.
    Revoked,
    /// The store could not be read.
    Unavailable,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 6] = [
        AuthFailure::Missing,
        AuthFailure::Malformed,
        AuthFailure::Unknown,
        AuthFailure::BadSecret,
        AuthFailure::Revoked,
        AuthFailure::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unknown => "unknown_key",
            AuthFailure::BadSecret => "bad_secret",
            AuthFailure::Revoked => "revoked",
            AuthFailure::Unavailable => "unavailable",
        }
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(levee_collectors::clock::now()).to_string()
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Makes a key in the audit log's store; returns it and its token (shown
/// this once, stored nowhere).
pub fn create(
    audit: &AuditLog,
    actor: Actor<'_>,
    name: &str,
    scope: Scope,
) -> Result<(ApiKey, String), KeyError> {
    if !valid_name(name) {
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
    let record = serde_json::to_vec(&stored).unwrap_or_default();
    // The key and its audit entry are one write: a key never exists
    // without the record of who made it.
    audit.append_with(
        actor,
        "apikey.create",
        &id,
        serde_json::json!({ "name": name, "scope": scope }),
        |b| b.api_key_put(&id, &record),
    )?;
    crate::store::crash::point("apikey.put", &|| id.clone());
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
        let record = serde_json::to_vec(&s).unwrap_or_default();
        audit.append_with(
            actor,
            "apikey.revoke",
            id,
            serde_json::json!({ "name": s.key.name }),
            |b| b.api_key_put(id, &record),
        )?;
        crate::store::crash::point("apikey.put", &|| id.to_owned());
    }
    Ok(s.key)
}

/// The key a bearer token proves, if it is valid and not revoked.
pub fn authenticate(store: &Store, token: &str) -> Option<ApiKey> {
    check(store, token).ok()
}

/// The key id a token names, when it has a key's form (the id is public:
/// it is in lists and audit entries; the secret never is).
pub fn token_id(token: &str) -> Option<&str> {
    let (id, _) = token.strip_prefix("lvk_")?.split_once('_')?;
    (id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The key a bearer token proves, or why it proves none.
pub fn check(store: &Store, token: &str) -> Result<ApiKey, AuthFailure> {
    let id = token_id(token).ok_or(AuthFailure::Malformed)?;
    let secret = &token[4 + id.len() + 1..];
    let bytes = store
        .api_key_get(id)
        .map_err(|_| AuthFailure::Unavailable)?
        .ok_or(AuthFailure::Unknown)?;
    let s: Stored = serde_json::from_slice(&bytes).map_err(|_| AuthFailure::Unknown)?;
    let given = hash(secret);
    // Constant time: the comparison reads every byte whatever differs.
    let same = constant_time_eq(given.as_bytes(), s.secret_sha256.as_bytes());
    if !same {
        return Err(AuthFailure::BadSecret);
    }
    if s.key.revoked.is_some() {
        return Err(AuthFailure::Revoked);
    }
    Ok(s.key)
}

/// Whether two byte strings are equal, reading every byte whatever differs
/// (the length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
        let (key, token) = create(&audit, Actor::System("test"), "grafana", Scope::Read).unwrap();
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
