//! Health (ejection) and load-balancing settings (SPEC 9).

use std::time::Duration;

use serde::Deserialize;

use super::env::Env;

/// How services of equal priority share requests (SPEC 9.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balancing {
    /// Configuration order (the Python router's behaviour).
    #[default]
    Ordered,
    RoundRobin,
    Weighted,
    LeastBusy,
    Latency,
}

impl Balancing {
    pub const ALL: [Balancing; 5] = [
        Balancing::Ordered,
        Balancing::RoundRobin,
        Balancing::Weighted,
        Balancing::LeastBusy,
        Balancing::Latency,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Balancing::Ordered => "ordered",
            Balancing::RoundRobin => "round_robin",
            Balancing::Weighted => "weighted",
            Balancing::LeastBusy => "least_busy",
            Balancing::Latency => "latency",
        }
    }
}

/// Passive health: when to eject a failing service and for how long (SPEC 9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Consecutive failed calls that eject a service; 0 turns ejection off.
    pub failure_threshold: u32,
    pub eject: Duration,
    pub eject_max: Duration,
    pub probe_interval: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            eject: Duration::from_secs(10),
            eject_max: Duration::from_secs(300),
            probe_interval: Duration::from_secs(5),
        }
    }
}

/// `[health]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    pub failure_threshold: Option<u32>,
    pub eject_seconds: Option<f64>,
    pub eject_max_seconds: Option<f64>,
    pub probe_interval: Option<f64>,
}

/// `[routing]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRouting {
    pub load_balancing: Option<String>,
}

pub(super) fn load_balancing(
    env: &dyn Env,
    file: Option<&FileRouting>,
    errors: &mut Vec<String>,
) -> Balancing {
    let (origin, raw) = match env.get("LOAD_BALANCING") {
        Some(v) => ("LOAD_BALANCING", v.to_owned()),
        None => match file.and_then(|f| f.load_balancing.clone()) {
            Some(v) => ("routing.load_balancing", v),
            None => return Balancing::default(),
        },
    };
    Balancing::ALL
        .into_iter()
        .find(|b| b.as_str().eq_ignore_ascii_case(raw.trim()))
        .unwrap_or_else(|| {
            let names = Balancing::ALL.map(Balancing::as_str).join(", ");
            errors.push(format!("{origin}: `{raw}` is not one of {names}"));
            Balancing::default()
        })
}

pub(super) fn load_health(
    env: &dyn Env,
    file: Option<&FileHealth>,
    errors: &mut Vec<String>,
) -> HealthConfig {
    let d = HealthConfig::default();
    let threshold = match env.get("HEALTH_FAILURE_THRESHOLD") {
        Some(v) => v.trim().parse::<u32>().unwrap_or_else(|_| {
            errors.push(format!(
                "HEALTH_FAILURE_THRESHOLD: `{v}` is not a whole number (0 turns ejection off)"
            ));
            d.failure_threshold
        }),
        None => file
            .and_then(|f| f.failure_threshold)
            .unwrap_or(d.failure_threshold),
    };
    let mut secs =
        |name: &str, key: &str, file_value: Option<f64>, default: Duration| -> Duration {
            let (origin, value) = match env.get(name) {
                Some(v) => match v.trim().parse::<f64>() {
                    Ok(f) => (name.to_owned(), f),
                    Err(_) => {
                        errors.push(format!("{name}: `{v}` is not a number of seconds"));
                        return default;
                    }
                },
                None => match file_value {
                    Some(f) => (format!("health.{key}"), f),
                    None => return default,
                },
            };
            if value.is_finite() && value > 0.0 {
                Duration::from_secs_f64(value.min(1e9))
            } else {
                errors.push(format!(
                    "{origin}: must be a positive number of seconds, got {value}"
                ));
                default
            }
        };
    let eject = secs(
        "HEALTH_EJECT_SECONDS",
        "eject_seconds",
        file.and_then(|f| f.eject_seconds),
        d.eject,
    );
    let eject_max = secs(
        "HEALTH_EJECT_MAX_SECONDS",
        "eject_max_seconds",
        file.and_then(|f| f.eject_max_seconds),
        d.eject_max,
    );
    let probe_interval = secs(
        "HEALTH_PROBE_INTERVAL",
        "probe_interval",
        file.and_then(|f| f.probe_interval),
        d.probe_interval,
    );
    if eject_max < eject {
        errors.push(format!(
            "HEALTH_EJECT_MAX_SECONDS: {} s is shorter than HEALTH_EJECT_SECONDS ({} s)",
            eject_max.as_secs_f64(),
            eject.as_secs_f64()
        ));
    }
    HealthConfig {
        failure_threshold: threshold,
        eject,
        eject_max,
        probe_interval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvMap;

    #[test]
    fn defaults_and_overrides() {
        let mut errors = Vec::new();
        let env = EnvMap::default();
        assert_eq!(
            load_health(&env, None, &mut errors),
            HealthConfig::default()
        );
        assert_eq!(load_balancing(&env, None, &mut errors), Balancing::Ordered);
        let env = EnvMap::from_pairs([
            ("HEALTH_FAILURE_THRESHOLD", "0"),
            ("HEALTH_EJECT_SECONDS", "0.5"),
            ("LOAD_BALANCING", "Round_Robin"),
        ]);
        let h = load_health(&env, None, &mut errors);
        assert_eq!(
            (h.failure_threshold, h.eject),
            (0, Duration::from_millis(500))
        );
        assert_eq!(
            load_balancing(&env, None, &mut errors),
            Balancing::RoundRobin
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let mut errors = Vec::new();
        let env = EnvMap::from_pairs([
            ("HEALTH_FAILURE_THRESHOLD", "-1"),
            ("HEALTH_PROBE_INTERVAL", "0"),
            ("HEALTH_EJECT_MAX_SECONDS", "1"),
            ("LOAD_BALANCING", "random"),
        ]);
        load_health(&env, None, &mut errors);
        load_balancing(&env, None, &mut errors);
        let all = errors.join("\n");
        for needle in [
            "HEALTH_FAILURE_THRESHOLD",
            "HEALTH_PROBE_INTERVAL",
            "HEALTH_EJECT_MAX_SECONDS",
            "LOAD_BALANCING",
        ] {
            assert!(all.contains(needle), "{needle} missing in {all}");
        }
    }
}
