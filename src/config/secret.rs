//! A string that must never be printed: API keys, client keys.
//!
//! `Debug` and `Display` show only the masked form, so a secret that slips into a
//! log line or an error message is harmless. Use [`Secret::expose`] at the one
//! place the real value is needed (the upstream `Authorization` header, the key
//! comparison).

use std::fmt;

/// A secret value whose `Debug`/`Display` print a masked form.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value. Call sites are few and deliberate.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `abcd...wxyz` for keys long enough that eight characters reveal little;
    /// shorter keys show at most their first character.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// Masks any key-like string as the Python router did (`abcd...wxyz`), harder for short ones.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    match chars.len() {
        0 => String::new(),
        n if n >= 16 => {
            let head: String = chars[..4].iter().collect();
            let tail: String = chars[n - 4..].iter().collect();
            format!("{head}...{tail}")
        }
        n if n >= 8 => format!("{}...{}", chars[0], chars[n - 1]),
        _ => "***".to_owned(),
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_keep_four_characters_each_side() {
        assert_eq!(mask("sk-alpha-0123456789-wxyz"), "sk-a...wxyz");
    }

    #[test]
    fn short_keys_are_masked_harder() {
        assert_eq!(mask("abcdefghij"), "a...j");
        assert_eq!(mask("abc"), "***");
        assert_eq!(mask(""), "");
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("sk-upstream-secret-AAAA-1234567890");
        assert!(!format!("{s:?}").contains("secret-AAAA"));
        assert!(!format!("{s}").contains("secret-AAAA"));
        assert_eq!(s.expose(), "sk-upstream-secret-AAAA-1234567890");
    }

    #[test]
    fn multibyte_keys_do_not_panic() {
        assert_eq!(mask("ключ-ключ-ключ-ключ"), "ключ...ключ");
    }
}
