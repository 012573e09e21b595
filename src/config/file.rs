//! The TOML configuration file: wire types (unknown keys are errors) and `${VAR}`
//! substitution, applied to every string value before it is interpreted.

use serde::Deserialize;

use super::env::Env;

/// Top level of the TOML file. Every key is optional; variables override it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub request_timeout: Option<f64>,
    pub max_request_body_bytes: Option<u64>,
    pub model_refresh_interval: Option<f64>,
    pub shutdown_grace_period: Option<f64>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub auth: Option<FileAuth>,
    pub health: Option<super::routing::FileHealth>,
    pub routing: Option<super::routing::FileRouting>,
    pub state: Option<super::state::FileState>,
    pub services: Option<Vec<WireService>>,
}

/// `[auth]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    pub enabled: Option<bool>,
    pub header_name: Option<String>,
    pub keys: Option<Vec<String>>,
    pub keys_file: Option<String>,
    pub admin_key: Option<String>,
    pub metrics_public: Option<bool>,
    /// `"N/W"`: requests per window seconds for each client key.
    pub key_rate_limit: Option<String>,
}

/// One service as written in `ROUTER_SERVICES` or a `[[services]]` table.
/// Loose types on purpose: validation into [`super::ServiceConfig`] names the field.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireService {
    pub name: Option<String>,
    pub backend_type: Option<String>,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub timeout: Option<f64>,
    pub priority: Option<i64>,
    pub rate_limit_requests: Option<i64>,
    pub rate_limit_window: Option<f64>,
    pub weight: Option<f64>,
}

/// Field names of [`WireService`], to tell unknown JSON keys apart.
pub const SERVICE_FIELDS: &[&str] = &[
    "name",
    "backend_type",
    "base_url",
    "api_key",
    "timeout",
    "priority",
    "rate_limit_requests",
    "rate_limit_window",
    "weight",
];

/// Parses the file text, substituting `${VAR}` in string values from `env`.
pub fn parse(text: &str, env: &dyn Env, origin: &str) -> Result<FileConfig, Vec<String>> {
    let mut value: toml::Table =
        toml::from_str(text).map_err(|e| vec![format!("{origin}: {e}")])?;
    let mut errors = Vec::new();
    for (key, v) in value.iter_mut() {
        substitute(v, env, key, &mut errors);
    }
    if !errors.is_empty() {
        return Err(errors
            .into_iter()
            .map(|e| format!("{origin}: {e}"))
            .collect());
    }
    toml::Value::Table(value)
        .try_into()
        .map_err(|e: toml::de::Error| vec![format!("{origin}: {}", e.message())])
}

fn substitute(value: &mut toml::Value, env: &dyn Env, path: &str, errors: &mut Vec<String>) {
    match value {
        toml::Value::String(s) => match expand(s, env) {
            Ok(Some(expanded)) => *s = expanded,
            Ok(None) => {}
            Err(var) => errors.push(format!("{path}: environment variable `{var}` is not set")),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, env, &format!("{path}[{i}]"), errors);
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                substitute(v, env, &format!("{path}.{k}"), errors);
            }
        }
        _ => {}
    }
}

/// `Ok(None)` when there is nothing to expand; `Err(name)` for an unset variable.
fn expand(s: &str, env: &dyn Env) -> Result<Option<String>, String> {
    if !s.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        match env.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(name.to_owned()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env::EnvMap;

    #[test]
    fn substitutes_variables_in_nested_strings() {
        let env = EnvMap::from_pairs([("KEY_A", "secret-a")]);
        let cfg = parse(
            "[[services]]\nname = \"a\"\nbackend_type = \"openai\"\nbase_url = \"http://x/v1\"\napi_key = \"${KEY_A}\"\n",
            &env,
            "f.toml",
        )
        .unwrap();
        let services = cfg.services.unwrap();
        assert_eq!(services[0].api_key.as_deref(), Some("secret-a"));
    }

    #[test]
    fn unset_variable_is_an_error_naming_it() {
        let env = EnvMap::default();
        let err = parse("[auth]\nadmin_key = \"${NOPE}\"\n", &env, "f.toml").unwrap_err();
        assert!(
            err[0].contains("NOPE") && err[0].contains("auth.admin_key"),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_them() {
        let env = EnvMap::default();
        let err = parse(
            "[[services]]\nname = \"a\"\nbogus_field = 1\n",
            &env,
            "f.toml",
        )
        .unwrap_err();
        assert!(err[0].contains("bogus_field"), "{err:?}");
    }
}
