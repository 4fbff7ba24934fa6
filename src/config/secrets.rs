//! Secret-bearing settings: which keys hold secrets, and their values
//! redacted wherever a setting is shown, logged or audited.
//!
//! The audit chain cannot forget (AUD-1): a value written into it is there
//! for as long as the chain is kept. So a reload that changes a secret is
//! recorded as "this secret changed" with a keyed hash of the new value
//! (HMAC-SHA256 under a key only this store holds: equal values can be
//! told equal, nobody can test guesses against it without the store), and
//! a URL is recorded without its credentials. The same redaction serves
//! the configuration view of the API and every log line.
//!
//! The secret-bearing keys (keep this list whole when adding keys):
//!
//! | key | holds |
//! |---|---|
//! | `scrubbing.http_token` | the provider's bearer token |
//! | `scrubbing.http_url` | a URL: its `user:password@` and query string may hold credentials |
//! | `web.metrics_token` | the bearer token `/metrics` requires |

use std::fmt;

use toml::Spanned;

use super::reader::Diags;
use super::Diff;

/// Flattened keys whose whole value is a secret.
pub const SECRET_KEYS: [&str; 2] = ["scrubbing.http_token", "web.metrics_token"];

/// Flattened keys whose value is a URL that may carry credentials.
pub const URL_KEYS: [&str; 1] = ["scrubbing.http_url"];

/// Whether the flattened key `path` holds a secret.
pub fn is_secret(path: &str) -> bool {
    SECRET_KEYS.contains(&path)
}

/// Whether the flattened key `path` holds a URL that may carry credentials.
pub fn is_url(path: &str) -> bool {
    URL_KEYS.contains(&path)
}

/// A secret from the configuration. Its `Debug` and `Display` never show
/// it; [`Secret::expose`] does, for the one place that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The value itself, to send where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A token setting: printable ASCII without spaces (it goes into an HTTP
/// header). The error never repeats the value.
pub(super) fn token(d: &mut Diags, s: &Spanned<String>, what: &str) -> Option<Secret> {
    let v = s.get_ref();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
        d.error(
            s.span(),
            format!("{what} must be printable ASCII without spaces (its value is not shown)"),
        );
        return None;
    }
    Some(Secret::new(v.clone()))
}

/// The position of a URL's authority: (start, end) byte offsets.
fn authority(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    Some((start, end))
}

/// Whether `url` carries credentials: a `user:password@` or a query
/// string (where tokens often go).
pub fn url_has_credentials(url: &str) -> bool {
    let userinfo = authority(url).is_some_and(|(s, e)| url[s..e].contains('@'));
    userinfo || url.contains('?')
}

/// Whether a path segment looks like a token (webhook URLs carry theirs in
/// the path): 16 or more of `[A-Za-z0-9_-]`, letters and digits both.
fn token_like(seg: &str) -> bool {
    seg.len() >= 16
        && seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && seg.bytes().any(|b| b.is_ascii_digit())
        && seg.bytes().any(|b| b.is_ascii_alphabetic())
}

/// The parts of `url` that may be credentials, as they appear in text: the
/// user information, each query value and each token-like path segment
/// (so a remote answer echoing one can be scrubbed of it).
pub fn url_secrets(url: &str) -> Vec<String> {
    let Some((start, end)) = authority(url) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(at) = url[start..end].rfind('@') {
        let info = &url[start..start + at];
        out.push(info.to_owned());
        if let Some((user, pass)) = info.split_once(':') {
            out.extend([user.to_owned(), pass.to_owned()]);
        }
    }
    let rest = url[end..].split('#').next().unwrap_or("");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    out.extend(path.split('/').filter(|s| token_like(s)).map(str::to_owned));
    out.extend(
        query
            .split('&')
            .filter_map(|kv| kv.split_once('=').map(|(_, v)| v.to_owned())),
    );
    out.retain(|s| s.len() >= 4);
    out
}

/// `url` without credentials: `user:password@` dropped, each query value
/// replaced by `REDACTED` (the names stay, so the endpoint is still
/// recognisable), each token-like path segment (16 or more letters,
/// digits, `_` or `-`, with letters and digits both) replaced by
/// `REDACTED`, the fragment dropped. A text that is not a URL comes back
/// as `<redacted>`: what it holds is unknown.
pub fn redact_url(url: &str) -> String {
    let Some((start, end)) = authority(url) else {
        return "<redacted>".to_owned();
    };
    let host = match url[start..end].rfind('@') {
        Some(at) => &url[start + at + 1..end],
        None => &url[start..end],
    };
    let rest = &url[end..];
    let (path, fragment) = match rest.find('#') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let path: String = path
        .split('/')
        .map(|seg| if token_like(seg) { "REDACTED" } else { seg })
        .collect::<Vec<_>>()
        .join("/");
    let path = match query.map(|q| (path.as_str(), q)) {
        Some((p, q)) => {
            let q: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}=REDACTED"),
                    None => "REDACTED".to_owned(),
                })
                .collect();
            format!("{p}?{}", q.join("&"))
        }
        None => path.to_owned(),
    };
    let _ = fragment; // never sent to the server; dropped too
    format!("{}{host}{path}", &url[..start])
}

/// `text` (an error message, a remote answer) with every URL in it
/// redacted ([`redact_url`]) and each of `secrets` replaced: for strings
/// that may quote what levee sent.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // The URL starts at the scheme before "://".
        let scheme_start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
            .map_or(0, |j| j + 1);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || "\"'<>`".contains(c))
            .map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&redact_url(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "<redacted>");
    }
    out
}

/// How a flattened setting (`Loaded::flat`'s value: TOML-rendered, strings
/// quoted) may be shown: a secret as `<secret>` — with `mac`'s keyed hash
/// of the value when given —, a URL without its credentials (and the
/// hash, when it had some), anything else as it is.
pub fn shown(path: &str, value: &str, mac: Option<&dyn Fn(&str) -> String>) -> String {
    let hash = |v: &str| {
        mac.map(|m| format!(", hmac-sha256 {}", m(v)))
            .unwrap_or_default()
    };
    if is_secret(path) {
        return format!("<secret{}>", hash(value));
    }
    if is_url(path) {
        let inner = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if url_has_credentials(inner) {
            return format!(
                "\"{}\" <credentials redacted{}>",
                redact_url(inner),
                hash(value)
            );
        }
    }
    value.to_owned()
}

impl Diff {
    /// The diff with every secret value redacted ([`shown`]): what the
    /// audit chain records of a reload.
    pub fn redacted(&self, mac: &dyn Fn(&str) -> String) -> Diff {
        let show = |k: &str, v: &str| shown(k, v, Some(mac));
        Diff {
            added: self
                .added
                .iter()
                .map(|(k, v)| (k.clone(), show(k, v)))
                .collect(),
            removed: self
                .removed
                .iter()
                .map(|(k, v)| (k.clone(), show(k, v)))
                .collect(),
            changed: self
                .changed
                .iter()
                .map(|(k, [a, b])| (k.clone(), [show(k, a), show(k, b)]))
                .collect(),
        }
    }
}

/// Whether a loaded file holds a secret: a secret key set, or a URL with
/// credentials. A plain hash of such a file's bytes, beside its settings
/// shown redacted, would let whoever reads both test guesses of the secret
/// offline; only a keyed one may be shown.
pub fn holds_secrets(flat: &std::collections::BTreeMap<String, String>) -> bool {
    flat.iter()
        .any(|(k, v)| is_secret(k) || (is_url(k) && url_has_credentials(v.trim_matches('"'))))
}

/// Every setting of a loaded file, secrets redacted (no hash): the
/// configuration as the API shows it.
pub fn view(flat: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    flat.iter()
        .map(|(k, v)| (k.clone(), shown(k, v, None)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://user:pa%40ss@scrub.example.net:8443/api/divert?token=abc&x"),
            "https://scrub.example.net:8443/api/divert?token=REDACTED&REDACTED"
        );
        assert_eq!(
            redact_url("http://scrub.example.net/api"),
            "http://scrub.example.net/api"
        );
        assert_eq!(redact_url("htps//u:p@host"), "<redacted>");
        assert!(url_has_credentials("https://u:p@h/"));
        assert!(url_has_credentials("https://h/?k=v"));
        assert!(!url_has_credentials("https://h/a@b"));
        assert_eq!(redact_url("https://h/a@b"), "https://h/a@b");
        // A webhook's token in its path.
        assert_eq!(
            redact_url("https://hooks.example/services/T0001/B0002/aBcD3fGh1jKlMn0pQrSt"),
            "https://hooks.example/services/T0001/B0002/REDACTED"
        );
        assert_eq!(
            url_secrets("https://op:hunter2@h/x/aBcD3fGh1jKlMn0pQrSt?key=v4lue&y"),
            // ("op" is too short to be worth scrubbing from text)
            ["op:hunter2", "hunter2", "aBcD3fGh1jKlMn0pQrSt", "v4lue"]
        );
    }

    #[test]
    fn text_is_scrubbed_of_urls_and_secrets() {
        let t = "https://op:hunter2@scrub.example/api: connection refused (token s3cr3t-t0ken)";
        let s = scrub(t, &["s3cr3t-t0ken"]);
        assert_eq!(
            s,
            "https://scrub.example/api: connection refused (token <redacted>)"
        );
        assert!(!s.contains("hunter2"));
    }

    #[test]
    fn secrets_are_shown_as_such() {
        let mac = |v: &str| format!("h({})", v.len());
        assert_eq!(
            shown("scrubbing.http_token", "\"abc\"", Some(&mac)),
            "<secret, hmac-sha256 h(5)>"
        );
        assert_eq!(shown("web.metrics_token", "\"abc\"", None), "<secret>");
        assert_eq!(
            shown("scrubbing.http_url", "\"https://u:p@h/x\"", Some(&mac)),
            "\"https://h/x\" <credentials redacted, hmac-sha256 h(17)>"
        );
        assert_eq!(
            shown("scrubbing.http_url", "\"https://h/x\"", Some(&mac)),
            "\"https://h/x\""
        );
        assert_eq!(
            shown("web.listen", "\"127.0.0.1:1\"", None),
            "\"127.0.0.1:1\""
        );
        assert_eq!(format!("{:?}", Secret::new("x")), "Secret(<redacted>)");
    }
}
