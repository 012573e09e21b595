//! Where configuration variables come from: the process environment layered over
//! the `.env` file of the working directory.
//!
//! Everything else in the crate reads variables through [`Env`], so tests build an
//! [`EnvMap`] from pairs and never touch the (process-global, `unsafe` to mutate)
//! environment. Names are case-insensitive, as in the Python router.

use std::collections::HashMap;
use std::path::Path;

/// A source of configuration variables. Empty values count as unset.
pub trait Env {
    fn get(&self, name: &str) -> Option<&str>;
}

/// Variables keyed by their upper-cased name.
#[derive(Debug, Clone, Default)]
pub struct EnvMap {
    vars: HashMap<String, String>,
}

impl EnvMap {
    /// Builds a map from explicit pairs (later pairs win). Used by tests and `demo`.
    pub fn from_pairs<K: AsRef<str>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut map = Self::default();
        for (k, v) in pairs {
            map.set(k.as_ref(), v.into());
        }
        map
    }

    /// The `.env` file in `dir` (if any), overridden by the process environment.
    ///
    /// A malformed `.env` is an error naming the file; a missing one is not.
    pub fn from_process_and_dotenv(dir: &Path) -> Result<Self, String> {
        let mut map = Self::default();
        let path = dir.join(".env");
        if path.is_file() {
            let iter =
                dotenvy::from_path_iter(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for item in iter {
                let (k, v) = item.map_err(|e| format!("{}: {e}", path.display()))?;
                map.set(&k, v);
            }
        }
        // vars_os, not vars: a non-UTF-8 variable elsewhere in the environment must
        // not abort start-up; such variables are simply not ours.
        #[allow(clippy::disallowed_methods)]
        for (k, v) in std::env::vars_os() {
            if let (Some(k), Some(v)) = (k.to_str(), v.to_str()) {
                map.set(k, v.to_owned());
            }
        }
        Ok(map)
    }

    pub fn set(&mut self, name: &str, value: String) {
        self.vars.insert(name.to_ascii_uppercase(), value);
    }
}

impl Env for EnvMap {
    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(&name.to_ascii_uppercase())
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_empty_is_unset() {
        let env = EnvMap::from_pairs([("port", "9000"), ("OPENAI_API_KEY", "")]);
        assert_eq!(env.get("PORT"), Some("9000"));
        assert_eq!(env.get("Port"), Some("9000"));
        assert_eq!(env.get("OPENAI_API_KEY"), None);
    }

    #[test]
    fn dotenv_is_read_and_multiline_quotes_work() {
        let dir = std::env::temp_dir().join(format!("llm-router-envtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(".env"),
            "LLM_ROUTER_TEST_ONLY_VAR=from-dotenv\nROUTER_SERVICES_TEST='[\n  {\"a\": 1}\n]'\n",
        )
        .unwrap();
        let env = EnvMap::from_process_and_dotenv(&dir).unwrap();
        assert_eq!(env.get("llm_router_test_only_var"), Some("from-dotenv"));
        assert_eq!(env.get("ROUTER_SERVICES_TEST"), Some("[\n  {\"a\": 1}\n]"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
