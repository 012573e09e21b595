use super::*;

fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load(
        &Overrides::default(),
        &EnvMap::from_pairs(pairs.iter().copied()),
    )
}

fn service_json(extra: &str) -> String {
    format!(r#"[{{"name":"a","backend_type":"custom","base_url":"http://127.0.0.1:9/v1"{extra}}}]"#)
}

#[test]
fn defaults_match_the_python_router() {
    let cfg = load_env(&[]).unwrap();
    assert_eq!((cfg.host.as_str(), cfg.port), ("0.0.0.0", 8000));
    assert_eq!(cfg.request_timeout, Duration::from_secs(60));
    assert_eq!(cfg.max_request_body_bytes, 10 * 1024 * 1024);
    assert_eq!(cfg.model_refresh_interval, Duration::from_secs(300));
    assert_eq!(cfg.shutdown_grace_period, Duration::from_secs(30));
    assert!(cfg.auth.enabled);
    assert_eq!(cfg.auth.header_name, http::header::AUTHORIZATION);
    assert!(cfg.services.is_empty());
    assert!(
        cfg.require_services()
            .unwrap_err()
            .to_string()
            .contains("ROUTER_SERVICES")
    );
}

#[test]
fn provider_variables_add_services_in_python_order() {
    let cfg = load_env(&[
        ("OPENAI_API_KEY", "sk-o"),
        ("OLLAMA_BASE_URL", "http://gpu:11434/v1"),
        ("CEREBRAS_API_KEY", "csk"),
        ("DEEPINFRA_TOKEN", "di"),
    ])
    .unwrap();
    let names: Vec<_> = cfg.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["cerebras", "deepinfra", "openai", "ollama"]);
    let prios: Vec<_> = cfg.services.iter().map(|s| s.priority).collect();
    assert_eq!(prios, [0, 1, 2, 3]);
    assert_eq!(cfg.services[0].base_url_str(), "https://api.cerebras.ai/v1");
    assert_eq!(
        cfg.services[1].base_url_str(),
        "https://api.deepinfra.com/v1/openai"
    );
    assert_eq!(cfg.services[3].api_key, None);
}

#[test]
fn ollama_at_default_url_without_key_is_not_added() {
    let cfg = load_env(&[("OLLAMA_BASE_URL", "http://localhost:11434/v1")]).unwrap();
    assert!(cfg.services.is_empty());
    let cfg = load_env(&[("OLLAMA_AUTH_KEY", "k")]).unwrap();
    assert_eq!(cfg.services[0].base_url_str(), "http://localhost:11434/v1");
}

#[test]
fn router_services_replaces_provider_variables_and_sorts_stably() {
    let json = r#"[
        {"name":"z","backend_type":"openai","base_url":"http://h/v1","priority":1},
        {"name":"y","backend_type":"ollama","base_url":"http://h/v1","priority":0},
        {"name":"x","backend_type":"custom","base_url":"http://h/v1","priority":1,
         "rate_limit_requests":10,"rate_limit_window":30,"timeout":2.5,"api_key":"k"}
    ]"#;
    let cfg = load_env(&[("ROUTER_SERVICES", json), ("OPENAI_API_KEY", "sk")]).unwrap();
    let names: Vec<_> = cfg.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["y", "z", "x"]);
    let x = &cfg.services[2];
    assert_eq!(
        x.rate_limit,
        Some(RateLimit {
            requests: NonZeroU32::new(10).unwrap(),
            window: Duration::from_secs(30)
        })
    );
    assert_eq!(x.timeout, Duration::from_millis(2500));
    assert_eq!(cfg.services[0].timeout, Duration::from_secs(60));
}

#[test]
fn rate_limit_window_defaults_to_sixty_seconds() {
    let cfg = load_env(&[(
        "ROUTER_SERVICES",
        &service_json(r#","rate_limit_requests":5"#),
    )])
    .unwrap();
    assert_eq!(
        cfg.services[0].rate_limit.unwrap().window,
        Duration::from_secs(60)
    );
}

#[test]
fn malformed_router_services_is_an_error_not_a_fallback() {
    let err = load_env(&[("ROUTER_SERVICES", "[{not json"), ("OPENAI_API_KEY", "sk")]).unwrap_err();
    assert!(err.to_string().contains("ROUTER_SERVICES"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once_naming_its_field() {
    let json = r#"[
        {"name":"a","backend_type":"telepathy","base_url":"not a url"},
        {"name":"a","backend_type":"openai","base_url":"http://h/v1","rate_limit_requests":5,"rate_limit_window":0},
        {"name":"b","backend_type":"openai","base_url":"http://h/v1"},
        {"name":"b","backend_type":"openai","base_url":"http://h/v1"}
    ]"#;
    let err = load_env(&[("ROUTER_SERVICES", json), ("PORT", "eighty")])
        .unwrap_err()
        .to_string();
    for needle in [
        "ROUTER_SERVICES[0].backend_type",
        "telepathy",
        "ROUTER_SERVICES[0].base_url",
        "ROUTER_SERVICES[1].rate_limit_window",
        "ROUTER_SERVICES[3].name: duplicate",
        "PORT",
    ] {
        assert!(err.contains(needle), "missing {needle} in:\n{err}");
    }
}

#[test]
fn negative_rate_limit_requests_is_rejected() {
    let err = load_env(&[(
        "ROUTER_SERVICES",
        &service_json(r#","rate_limit_requests":-1"#),
    )])
    .unwrap_err();
    assert!(err.to_string().contains("rate_limit_requests"));
}

#[test]
fn unknown_json_fields_are_ignored_like_the_python_router() {
    let cfg = load_env(&[("ROUTER_SERVICES", &service_json(r#","models":["m"]"#))]).unwrap();
    assert_eq!(cfg.services.len(), 1);
}

#[test]
fn auth_key_wins_over_numbered_keys_which_stop_at_the_first_gap() {
    let cfg = load_env(&[
        ("AUTH_KEY_01", "one"),
        ("AUTH_KEY_02", "two"),
        ("AUTH_KEY_04", "four"),
    ])
    .unwrap();
    let keys: Vec<_> = cfg
        .auth
        .keys
        .iter()
        .map(|k| k.expose().to_owned())
        .collect();
    assert_eq!(keys, ["one", "two"]);
    let cfg = load_env(&[("AUTH_KEY", "only"), ("AUTH_KEY_01", "one")]).unwrap();
    assert_eq!(cfg.auth.keys.len(), 1);
    assert_eq!(cfg.auth.keys[0].expose(), "only");
}

#[test]
fn enable_auth_false_and_header_name() {
    let cfg = load_env(&[("enable_auth", "False"), ("AUTH_HEADER_NAME", "X-API-Key")]).unwrap();
    assert!(!cfg.auth.enabled);
    assert_eq!(cfg.auth.header_name.as_str(), "x-api-key");
    assert!(
        load_env(&[("ENABLE_AUTH", "maybe")])
            .unwrap_err()
            .to_string()
            .contains("ENABLE_AUTH")
    );
}

fn write_toml(body: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "llm-router-cfg-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn precedence_is_flags_then_env_then_file_then_defaults() {
    let path = write_toml(
        "host = \"10.0.0.1\"\nport = 7000\nrequest_timeout = 5\n[[services]]\nname = \"f\"\nbackend_type = \"custom\"\nbase_url = \"http://f/v1\"\napi_key = \"${FILE_KEY}\"\n",
    );
    let env = EnvMap::from_pairs([("PORT", "7100"), ("FILE_KEY", "from-env")]);
    let overrides = Overrides {
        config_file: Some(path.clone()),
        host: Some("127.0.0.2".into()),
        port: None,
    };
    let cfg = load(&overrides, &env).unwrap();
    assert_eq!(cfg.host, "127.0.0.2"); // flag beats file
    assert_eq!(cfg.port, 7100); // env beats file
    assert_eq!(cfg.request_timeout, Duration::from_secs(5)); // file beats default
    assert_eq!(cfg.services[0].timeout, Duration::from_secs(5));
    assert_eq!(
        cfg.services[0].api_key.as_ref().unwrap().expose(),
        "from-env"
    );
    assert_eq!(cfg.services_source, "config file");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn config_file_from_llm_router_config_and_unknown_keys_rejected() {
    let path = write_toml(
        "[[services]]\nname = \"f\"\nbackend_type = \"custom\"\nbase_url = \"http://f/v1\"\nrate_limt = 3\n",
    );
    let env = EnvMap::from_pairs([("LLM_ROUTER_CONFIG", path.to_str().unwrap())]);
    let err = load(&Overrides::default(), &env).unwrap_err().to_string();
    assert!(err.contains("rate_limt"), "{err}");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn missing_config_file_is_an_error_naming_it() {
    let overrides = Overrides {
        config_file: Some("/nonexistent/llm-router.toml".into()),
        ..Overrides::default()
    };
    let err = load(&overrides, &EnvMap::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/llm-router.toml"), "{err}");
}

#[test]
fn invalid_values_in_the_file_are_errors_not_defaults() {
    let path =
        write_toml("shutdown_grace_period = -1\nmax_request_body_bytes = 0\nrequest_timeout = 0\n");
    let overrides = Overrides {
        config_file: Some(path.clone()),
        ..Overrides::default()
    };
    let err = load(&overrides, &EnvMap::default())
        .unwrap_err()
        .to_string();
    for needle in [
        "shutdown_grace_period",
        "max_request_body_bytes",
        "request_timeout",
    ] {
        assert!(err.contains(needle), "missing {needle}: {err}");
    }
    std::fs::remove_file(path).unwrap();
}

#[test]
fn grace_period_may_be_zero_but_timeouts_may_not() {
    let cfg = load_env(&[("SHUTDOWN_GRACE_PERIOD", "0")]).unwrap();
    assert_eq!(cfg.shutdown_grace_period, Duration::ZERO);
    assert!(
        load_env(&[("REQUEST_TIMEOUT", "0")])
            .unwrap_err()
            .to_string()
            .contains("REQUEST_TIMEOUT")
    );
    assert!(load_env(&[("MODEL_REFRESH_INTERVAL", "-3")]).is_err());
}

#[test]
fn log_level_and_format_are_validated() {
    assert!(
        load_env(&[("LOG_LEVEL", "loud")])
            .unwrap_err()
            .to_string()
            .contains("LOG_LEVEL")
    );
    assert!(
        load_env(&[("LOG_FORMAT", "xml")])
            .unwrap_err()
            .to_string()
            .contains("LOG_FORMAT")
    );
    let cfg = load_env(&[("LOG_LEVEL", "debug"), ("LOG_FORMAT", "JSON")]).unwrap();
    assert_eq!(
        (cfg.log_level.as_str(), cfg.log_format),
        ("debug", LogFormat::Json)
    );
}

#[test]
fn weights_must_be_positive_and_default_to_one() {
    let cfg = load_env(&[("ROUTER_SERVICES", &service_json(r#","weight":2.5"#))]).unwrap();
    assert_eq!(cfg.services[0].weight, 2.5);
    let cfg = load_env(&[("ROUTER_SERVICES", &service_json(""))]).unwrap();
    assert_eq!(cfg.services[0].weight, 1.0);
    for bad in ["0", "-1"] {
        let err = load_env(&[(
            "ROUTER_SERVICES",
            &service_json(&format!(r#","weight":{bad}"#)),
        )])
        .unwrap_err();
        assert!(
            err.to_string().contains("ROUTER_SERVICES[0].weight"),
            "{err}"
        );
    }
}

#[test]
fn health_and_balancing_come_from_the_file_too() {
    let path = write_toml(
        "[health]\nfailure_threshold = 5\neject_seconds = 2\n[routing]\nload_balancing = \"least_busy\"\n",
    );
    let overrides = Overrides {
        config_file: Some(path.clone()),
        ..Overrides::default()
    };
    let cfg = load(&overrides, &EnvMap::default()).unwrap();
    assert_eq!(
        (cfg.health.failure_threshold, cfg.health.eject),
        (5, Duration::from_secs(2))
    );
    assert_eq!(cfg.balancing, Balancing::LeastBusy);
    std::fs::remove_file(path).unwrap();
}
