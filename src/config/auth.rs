//! Client-authentication settings: the Python router's `AUTH_KEY` /
//! `AUTH_KEY_01..99` rule, a keys file, an admin key and per-key limits.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;

use super::env::Env;
use super::file::FileAuth;
use super::{RateLimit, Secret, parse_bool};

/// Client authentication, validated.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub enabled: bool,
    /// The only header the client key is read from.
    pub header_name: HeaderName,
    /// Keys from the variables (or `[auth] keys`), then from the keys file.
    pub keys: Vec<Secret>,
    pub keys_file: Option<PathBuf>,
    /// When set, only this key may call the mutating admin endpoints.
    pub admin_key: Option<Secret>,
    pub metrics_public: bool,
    /// Optional requests-per-window limit applied to each client key.
    pub key_rate_limit: Option<RateLimit>,
}

pub(super) fn load(env: &dyn Env, file: Option<&FileAuth>, errors: &mut Vec<String>) -> AuthConfig {
    let enabled = flag(
        env,
        "ENABLE_AUTH",
        file.and_then(|f| f.enabled),
        true,
        errors,
    );
    let metrics_public = flag(
        env,
        "METRICS_PUBLIC",
        file.and_then(|f| f.metrics_public),
        false,
        errors,
    );
    let header_raw = env
        .get("AUTH_HEADER_NAME")
        .map(str::to_owned)
        .or_else(|| file.and_then(|f| f.header_name.clone()))
        .unwrap_or_else(|| "Authorization".to_owned());
    let header_name = HeaderName::from_bytes(header_raw.trim().as_bytes()).unwrap_or_else(|_| {
        errors.push(format!(
            "AUTH_HEADER_NAME: `{header_raw}` is not a valid HTTP header name"
        ));
        http::header::AUTHORIZATION
    });

    // AUTH_KEY, when set, is the only key; else AUTH_KEY_01.. up to the first gap.
    let mut keys = Vec::new();
    // A whitespace-only value counts as unset, like an empty one.
    let key = |name: &str| {
        env.get(name)
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(Secret::new)
    };
    if let Some(k) = key("AUTH_KEY") {
        keys.push(k);
    } else {
        for i in 1..=99 {
            match key(&format!("AUTH_KEY_{i:02}")) {
                Some(k) => keys.push(k),
                None => break,
            }
        }
    }
    if keys.is_empty()
        && let Some(file_keys) = file.and_then(|f| f.keys.as_ref())
    {
        keys.extend(
            file_keys
                .iter()
                .filter(|k| !k.trim().is_empty())
                .map(|k| Secret::new(k.trim())),
        );
    }
    let keys_file = env
        .get("AUTH_KEYS_FILE")
        .map(PathBuf::from)
        .or_else(|| file.and_then(|f| f.keys_file.as_ref()).map(PathBuf::from));
    if let Some(path) = &keys_file {
        match read_keys_file(path) {
            Ok(more) => {
                for k in more {
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
            Err(e) => errors.push(format!("AUTH_KEYS_FILE: {e}")),
        }
    }
    let admin_key = env
        .get("ADMIN_KEY")
        .map(str::to_owned)
        .or_else(|| file.and_then(|f| f.admin_key.clone()))
        .map(|k| k.trim().to_owned())
        // Blank counts as unset: an empty admin key would lock the admin endpoints.
        .filter(|k| !k.is_empty())
        .map(Secret::new);
    let key_rate_limit = match env
        .get("AUTH_KEY_RATE_LIMIT")
        .map(|v| ("AUTH_KEY_RATE_LIMIT", v.to_owned()))
        .or_else(|| {
            file.and_then(|f| f.key_rate_limit.clone())
                .map(|v| ("auth.key_rate_limit", v))
        }) {
        None => None,
        Some((origin, raw)) => parse_rate(&raw).or_else(|| {
            errors.push(format!(
                "{origin}: `{raw}` is not REQUESTS/SECONDS with both positive (for example 60/60)"
            ));
            None
        }),
    };
    AuthConfig {
        enabled,
        header_name,
        keys,
        keys_file,
        admin_key,
        metrics_public,
        key_rate_limit,
    }
}

fn flag(
    env: &dyn Env,
    name: &str,
    file: Option<bool>,
    default: bool,
    errors: &mut Vec<String>,
) -> bool {
    match env.get(name) {
        Some(v) => parse_bool(v).unwrap_or_else(|| {
            errors.push(format!("{name}: `{v}` is not a boolean (true/false)"));
            default
        }),
        None => file.unwrap_or(default),
    }
}

/// One key per line; blank lines and `#` comments ignored.
pub fn read_keys_file(path: &Path) -> Result<Vec<Secret>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        // Whole-line comments only: a key may contain `#`.
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(Secret::new)
        .collect())
}

/// `N/W` or `N/Ws`: N requests per W seconds.
fn parse_rate(raw: &str) -> Option<RateLimit> {
    let (n, w) = raw.trim().split_once('/')?;
    let requests = NonZeroU32::new(n.trim().parse().ok()?)?;
    let secs: f64 = w.trim().trim_end_matches('s').parse().ok()?;
    (secs.is_finite() && secs > 0.0).then(|| RateLimit {
        requests,
        window: Duration::from_secs_f64(secs.min(1e9)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvMap;

    fn auth(pairs: &[(&str, &str)]) -> (AuthConfig, Vec<String>) {
        let mut errors = Vec::new();
        let cfg = load(
            &EnvMap::from_pairs(pairs.iter().copied()),
            None,
            &mut errors,
        );
        (cfg, errors)
    }

    #[test]
    fn keys_file_adds_keys_skipping_comments_and_blanks() {
        let path = std::env::temp_dir().join(format!("llm-router-keys-{}", std::process::id()));
        std::fs::write(
            &path,
            "# team keys\nsk-file-one\n\n  sk-file-#two  \nsk-var\n",
        )
        .unwrap();
        let (cfg, errors) = auth(&[
            ("AUTH_KEY", "sk-var"),
            ("AUTH_KEYS_FILE", path.to_str().unwrap()),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        let keys: Vec<&str> = cfg.keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["sk-var", "sk-file-one", "sk-file-#two"]);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn blank_keys_count_as_unset() {
        let (cfg, errors) = auth(&[
            ("ADMIN_KEY", "   "),
            ("AUTH_KEY_01", "one"),
            ("AUTH_KEY_02", " "),
            ("AUTH_KEY_03", "three"),
        ]);
        assert!(errors.is_empty());
        assert!(cfg.admin_key.is_none());
        assert_eq!(cfg.keys.len(), 1, "a blank AUTH_KEY_02 is a gap");
    }

    #[test]
    fn a_missing_keys_file_is_an_error() {
        let (_, errors) = auth(&[("AUTH_KEYS_FILE", "/nonexistent/keys.txt")]);
        assert!(errors[0].contains("AUTH_KEYS_FILE"), "{errors:?}");
    }

    #[test]
    fn key_rate_limit_parses_and_rejects_nonsense() {
        let (cfg, errors) = auth(&[("AUTH_KEY_RATE_LIMIT", "60/30s")]);
        assert!(errors.is_empty());
        let rl = cfg.key_rate_limit.unwrap();
        assert_eq!(
            (rl.requests.get(), rl.window),
            (60, Duration::from_secs(30))
        );
        for bad in ["60", "0/60", "5/0", "x/y"] {
            let (_, errors) = auth(&[("AUTH_KEY_RATE_LIMIT", bad)]);
            assert!(errors[0].contains("AUTH_KEY_RATE_LIMIT"), "{bad}");
        }
    }
}
