//! Shared state for several replicas (SPEC 8): `REDIS_URL` and friends, and
//! the `[state]` table.

use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use url::Url;

use super::env::Env;
use super::secret::Secret;

/// What limits do while Redis is unreachable (SPEC 8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// An in-memory window with ⌈N / R⌉ per replica.
    Local,
    /// Limits are not enforced.
    Open,
    /// Every limited service counts as rate-limited.
    Closed,
}

impl FailureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::Local => "local",
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        }
    }
}

/// The Redis shared-state settings; `None` in [`super::Config`] means memory.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The URL, password included: only [`RedisConfig::display_url`] is ever shown.
    pub url: Secret,
    pub key_prefix: String,
    pub timeout: Duration,
    pub failure_mode: FailureMode,
    /// `REDIS_CA_FILE`: the PEM certificates a `rediss://` server must chain to,
    /// read at start-up, in place of the public web roots.
    pub ca: Option<CaFile>,
}

/// A CA bundle read from a file, with the path it came from (for messages).
#[derive(Debug, Clone)]
pub struct CaFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl RedisConfig {
    /// The URL with any password replaced by `****`.
    pub fn display_url(&self) -> String {
        mask_url(self.url.expose())
    }

    /// `text` with the URL's password, should a message ever quote it, as `****`
    /// (as written in the URL, percent-encoded or not). Passwords under 4
    /// characters are left alone: replacing them would garble the message.
    pub fn scrub(&self, text: &str) -> String {
        let Some(encoded) = Url::parse(self.url.expose())
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
        else {
            return text.to_owned();
        };
        let decoded = percent_encoding::percent_decode_str(&encoded)
            .decode_utf8_lossy()
            .into_owned();
        [encoded, decoded]
            .iter()
            .filter(|pw| pw.chars().count() >= 4)
            .fold(text.to_owned(), |t, pw| t.replace(pw.as_str(), "****"))
    }
}

/// `redis://user:secret@host/0` → `redis://user:****@host/0`.
pub fn mask_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("****"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

/// `[state]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileState {
    pub redis_url: Option<String>,
    pub key_prefix: Option<String>,
    pub timeout_ms: Option<u64>,
    pub failure_mode: Option<String>,
    pub ca_file: Option<String>,
}

pub(super) fn load(
    env: &dyn Env,
    file: Option<&FileState>,
    errors: &mut Vec<String>,
) -> Option<RedisConfig> {
    let url = env
        .get("REDIS_URL")
        .map(str::to_owned)
        .or_else(|| file.and_then(|f| f.redis_url.clone()))?;
    let url = url.trim().to_owned();
    let tls = match Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host().is_some() => {
            u.scheme() == "rediss"
        }
        _ => {
            errors.push(format!(
                "REDIS_URL: `{}` is not a redis:// or rediss:// URL with a host",
                mask_url(&url)
            ));
            false
        }
    };
    let key_prefix = env
        .get("REDIS_KEY_PREFIX")
        .map(str::to_owned)
        .or_else(|| file.and_then(|f| f.key_prefix.clone()))
        .unwrap_or_else(|| "llm-router".to_owned());
    if key_prefix.contains(['{', '}']) || key_prefix.trim().is_empty() {
        errors.push(format!("REDIS_KEY_PREFIX: `{key_prefix}` must be non-empty and contain no braces (they are hash tags)"));
    }
    let timeout_ms = match env.get("REDIS_TIMEOUT_MS") {
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms > 0)
            .unwrap_or_else(|| {
                errors.push(format!(
                    "REDIS_TIMEOUT_MS: `{v}` is not a positive number of milliseconds"
                ));
                50
            }),
        None => match file.and_then(|f| f.timeout_ms) {
            Some(0) => {
                errors
                    .push("state.timeout_ms: must be a positive number of milliseconds".to_owned());
                50
            }
            other => other.unwrap_or(50),
        },
    };
    let mode_raw = env
        .get("REDIS_FAILURE_MODE")
        .map(str::to_owned)
        .or_else(|| file.and_then(|f| f.failure_mode.clone()))
        .unwrap_or_else(|| "local".to_owned());
    let failure_mode = [FailureMode::Local, FailureMode::Open, FailureMode::Closed]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(mode_raw.trim()))
        .unwrap_or_else(|| {
            errors.push(format!(
                "REDIS_FAILURE_MODE: `{mode_raw}` is not local, open or closed"
            ));
            FailureMode::Local
        });
    let ca = env
        .get("REDIS_CA_FILE")
        .map(str::to_owned)
        .or_else(|| file.and_then(|f| f.ca_file.clone()))
        .filter(|path| !path.trim().is_empty())
        .and_then(|path| match read_ca_file(tls, PathBuf::from(path.trim())) {
            Ok(ca) => Some(ca),
            Err(e) => {
                errors.push(format!("REDIS_CA_FILE: {e}"));
                None
            }
        });
    Some(RedisConfig {
        url: Secret::new(url),
        key_prefix,
        timeout: Duration::from_millis(timeout_ms),
        failure_mode,
        ca,
    })
}

/// Reads a CA bundle for a `rediss://` URL. A CA for a plain `redis://` URL is an
/// error rather than ignored: the operator meant the connection to be verified.
fn read_ca_file(tls: bool, path: PathBuf) -> Result<CaFile, String> {
    if !tls {
        return Err(format!(
            "{} is given, but REDIS_URL is not a rediss:// (TLS) URL",
            path.display()
        ));
    }
    let pem = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if !certs.is_empty() => Ok(CaFile { path, pem }),
        Ok(_) => Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )),
        Err(e) => Err(format!("{}: not a valid PEM file: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvMap;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:****@127.0.0.1:6379/0"
        );
        assert_eq!(
            mask_url("rediss://app:hunter2@redis.internal/1"),
            "rediss://app:****@redis.internal/1"
        );
        assert_eq!(mask_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn scrub_hides_the_password_encoded_or_not_but_not_a_tiny_one() {
        let env = EnvMap::from_pairs([("REDIS_URL", "redis://:p%40ss-word@h:1/0")]);
        let cfg = load(&env, None, &mut Vec::new()).unwrap();
        assert_eq!(
            cfg.scrub("auth p@ss-word / p%40ss-word failed"),
            "auth **** / **** failed"
        );
        let env = EnvMap::from_pairs([("REDIS_URL", "redis://:ab@h:1/0")]);
        let cfg = load(&env, None, &mut Vec::new()).unwrap();
        assert_eq!(cfg.scrub("a cab"), "a cab");
    }

    #[test]
    fn defaults_and_validation() {
        let mut errors = Vec::new();
        assert!(load(&EnvMap::default(), None, &mut errors).is_none());
        let cfg = load(
            &EnvMap::from_pairs([("REDIS_URL", "redis://:pw@h:1/0")]),
            None,
            &mut errors,
        )
        .unwrap();
        assert_eq!(
            (cfg.key_prefix.as_str(), cfg.timeout, cfg.failure_mode),
            ("llm-router", Duration::from_millis(50), FailureMode::Local)
        );
        assert!(errors.is_empty());
        let env = EnvMap::from_pairs([
            ("REDIS_URL", "http://:secretpw@h"),
            ("REDIS_TIMEOUT_MS", "0"),
            ("REDIS_FAILURE_MODE", "maybe"),
            ("REDIS_KEY_PREFIX", "a{b}"),
        ]);
        load(&env, None, &mut errors);
        let all = errors.join("\n");
        for needle in [
            "REDIS_URL",
            "REDIS_TIMEOUT_MS",
            "REDIS_FAILURE_MODE",
            "REDIS_KEY_PREFIX",
        ] {
            assert!(all.contains(needle), "{needle}: {all}");
        }
        assert!(!all.contains("secretpw"), "{all}");
    }

    #[test]
    fn a_ca_file_must_be_readable_hold_a_certificate_and_go_with_rediss() {
        let dir = std::env::temp_dir().join(format!("llm-router-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(
            &good,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let good = good.to_str().unwrap();
        let cases = [
            ("rediss://h:1/0", good, None),
            ("redis://h:1/0", good, Some("not a rediss://")),
            (
                "rediss://h:1/0",
                junk.to_str().unwrap(),
                Some("no PEM certificate"),
            ),
            (
                "rediss://h:1/0",
                broken.to_str().unwrap(),
                Some("not a valid PEM file"),
            ),
            ("rediss://h:1/0", "/nonexistent/ca.pem", Some("cannot read")),
        ];
        for (url, path, want) in cases {
            let mut errors = Vec::new();
            let env = EnvMap::from_pairs([("REDIS_URL", url), ("REDIS_CA_FILE", path)]);
            let cfg = load(&env, None, &mut errors).unwrap();
            match want {
                None => {
                    assert!(errors.is_empty(), "{errors:?}");
                    assert!(cfg.ca.unwrap().pem.starts_with(b"-----BEGIN"));
                }
                Some(needle) => {
                    let all = errors.join("\n");
                    assert!(
                        all.contains("REDIS_CA_FILE") && all.contains(needle),
                        "{all}"
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
