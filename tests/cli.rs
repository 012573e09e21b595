//! SPEC 2: the binary itself — `--version`, `--help`, `check`, exit codes,
//! configuration from `.env` and `--config`, `demo`, and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The binary under test: `LLM_ROUTER_BIN` (scripts/test points it at the
/// release build the Docker image ships), else the one cargo built for tests.
fn bin() -> std::ffi::OsString {
    std::env::var_os("LLM_ROUTER_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_llm-router").into())
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("llm-router-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The binary with a clean environment (no stray keys from the machine).
fn command(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    // A failing test must not leave a router running.
    c.kill_on_drop(true);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(dir)
        .stdin(Stdio::null());
    c
}

async fn output(mut c: Command) -> (i32, String) {
    let out = c.output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_healthy(port: u16) {
    let client = http_client();
    for _ in 0..500 {
        if client
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("router on port {port} never answered /health");
}

fn sigterm(child: &Child) {
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
}

#[tokio::test]
async fn version_and_help_on_every_subcommand() {
    let dir = temp_dir("help");
    let mut c = command(&dir);
    c.arg("--version");
    let (code, out) = output(c).await;
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    for sub in [None, Some("serve"), Some("check"), Some("demo")] {
        let mut c = command(&dir);
        c.args(sub).arg("--help");
        let (code, out) = output(c).await;
        assert_eq!(code, 0, "{sub:?}: {out}");
        assert!(
            out.contains("--config"),
            "{sub:?} help lacks --config: {out}"
        );
    }
}

#[tokio::test]
async fn check_prints_services_in_routing_order_with_keys_masked() {
    let dir = temp_dir("check");
    let services = json!([
        {"name": "alpha", "backend_type": "custom", "base_url": "http://127.0.0.1:9/v1", "priority": 5, "api_key": "sk-check-secret-alpha-123456789"},
        {"name": "bravo", "backend_type": "openai", "base_url": "http://127.0.0.1:9/v1", "priority": 1, "api_key": "sk-check-secret-bravo-987654321"},
    ]);
    let mut c = command(&dir);
    c.arg("check").env("ROUTER_SERVICES", services.to_string());
    let (code, out) = output(c).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.find("bravo").unwrap() < out.find("alpha").unwrap(),
        "{out}"
    );
    assert!(
        !out.contains("secret-alpha") && !out.contains("secret-bravo"),
        "{out}"
    );
}

#[tokio::test]
async fn bad_configuration_exits_non_zero_naming_the_field() {
    let dir = temp_dir("bad");
    let cases: [(&str, &[(&str, &str)]); 6] = [
        ("ROUTER_SERVICES", &[("ROUTER_SERVICES", "[{not json")]),
        (
            "backend_type",
            &[(
                "ROUTER_SERVICES",
                r#"[{"name":"x","backend_type":"telepathy","base_url":"http://h/v1"}]"#,
            )],
        ),
        (
            "base_url",
            &[(
                "ROUTER_SERVICES",
                r#"[{"name":"x","backend_type":"custom","base_url":"nope"}]"#,
            )],
        ),
        (
            "duplicate",
            &[(
                "ROUTER_SERVICES",
                r#"[{"name":"x","backend_type":"custom","base_url":"http://h/v1"},{"name":"x","backend_type":"custom","base_url":"http://h/v1"}]"#,
            )],
        ),
        (
            "rate_limit_window",
            &[(
                "ROUTER_SERVICES",
                r#"[{"name":"x","backend_type":"custom","base_url":"http://h/v1","rate_limit_requests":1,"rate_limit_window":-5}]"#,
            )],
        ),
        // Read before the runtime starts; tokio itself would panic on it.
        (
            "TOKIO_WORKER_THREADS",
            &[
                ("TOKIO_WORKER_THREADS", "zero"),
                ("OPENAI_API_KEY", "sk-test-0000000000"),
            ],
        ),
    ];
    for (needle, env) in cases {
        for sub in ["check", "serve"] {
            let mut c = command(&dir);
            c.arg(sub)
                .envs(env.iter().copied())
                .env("PORT", free_port().to_string());
            let (code, out) = output(c).await;
            assert_ne!(code, 0, "{sub} accepted a bad configuration: {out}");
            assert!(out.contains(needle), "{sub}: {out}");
            assert!(!out.contains("panicked"), "{out}");
        }
    }
}

#[tokio::test]
async fn serve_without_services_explains_what_to_set() {
    let dir = temp_dir("none");
    let mut c = command(&dir);
    c.env("PORT", free_port().to_string());
    let (code, out) = output(c).await;
    assert_ne!(code, 0);
    for needle in ["ROUTER_SERVICES", "OPENAI_API_KEY", "--config", "demo"] {
        assert!(out.contains(needle), "missing {needle}: {out}");
    }
}

#[tokio::test]
async fn dotenv_and_config_file_configure_the_binary_with_env_winning() {
    let dir = temp_dir("files");
    std::fs::write(dir.join(".env"), "OPENAI_API_KEY=sk-from-dotenv-0000000000\nOPENAI_BASE_URL=http://127.0.0.1:9/v1\nREQUEST_TIMEOUT=7\n").unwrap();
    std::fs::write(
        dir.join("router.toml"),
        "request_timeout = 3\nport = 1234\n",
    )
    .unwrap();
    let mut c = command(&dir);
    c.args(["check", "--config", "router.toml"])
        .env("PORT", "4321");
    let (code, out) = output(c).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("openai") && out.contains("timeout=7s"),
        ".env did not beat the file: {out}"
    );
    assert!(out.contains(":4321"), "env did not beat the file: {out}");
    assert!(!out.contains("from-dotenv"), "{out}");
}

/// With one worker thread the router runs on tokio's current-thread scheduler,
/// with more on the work-stealing one: both serve, stream and shut down the same.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_stream_finish_then_exits_zero() {
    for workers in ["1", "2"] {
        sigterm_during_a_stream(workers).await;
    }
}

async fn sigterm_during_a_stream(workers: &str) {
    let a = MockUpstream::start("A").await;
    a.set(sse_chat("t", 6, Duration::from_millis(150)));
    let dir = temp_dir("term");
    let port = free_port();
    let mut c = command(&dir);
    c.env("ROUTER_SERVICES", json!([svc(&a)]).to_string())
        .env("TOKIO_WORKER_THREADS", workers)
        .env("ENABLE_AUTH", "false")
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut logs = BufReader::new(child.stdout.take().unwrap()).lines();
    wait_healthy(port).await;
    let client = http_client();
    let r = client
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&chat_request("test-model", json!({"stream": true})))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let mut text = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    sigterm(&child);
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "{workers} worker(s): stream cut short by shutdown: {text}"
    );
    assert_eq!(sse_data(&text).len(), 7, "{workers} worker(s)");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{workers} worker(s)");
    let mut listening = String::new();
    while let Ok(Some(line)) = logs.next_line().await {
        if line.contains("llm-router listening") {
            listening = line;
        }
    }
    let scheduler = if workers == "1" {
        "current-thread"
    } else {
        "multi-thread"
    };
    assert!(
        listening.contains(&format!("workers={workers}"))
            && listening.contains(&format!("scheduler=\"{scheduler}\"")),
        "the start-up line names the scheduler: {listening:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_serves_routes_and_streams_without_keys() {
    let dir = temp_dir("demo");
    let mut c = command(&dir);
    c.arg("demo")
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut base = None;
    let mut banner = String::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
    {
        banner.push_str(&line);
        banner.push('\n');
        if let Some(url) = line.strip_prefix("llm-router demo is running on ") {
            base = Some(url.trim().to_owned());
        }
        if line.contains("Ctrl-C") {
            break;
        }
    }
    let base = base.unwrap_or_else(|| panic!("no URL in the demo banner:\n{banner}"));
    assert!(
        banner.contains("curl") && banner.contains("OFF"),
        "{banner}"
    );
    let client = http_client();
    let models: serde_json::Value = client
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!models["data"].as_array().unwrap().is_empty());
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&chat_request("demo-chat", json!({})))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stream = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat_request("demo-chat", json!({"stream": true})))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(stream.ends_with("data: [DONE]\n\n"), "{stream}");
    let st: serde_json::Value = client
        .get(format!("{base}/router/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        st["total_failovers"].as_u64().unwrap() + st["total_rate_limit_skips"].as_u64().unwrap()
            > 0,
        "{st}"
    );
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_keys_and_no_key_ever_reaches_the_logs() {
    let a = MockUpstream::start("A").await;
    a.set(error(500, "upstream failure to log"));
    let (old_key, new_key, wrong) = (
        "sk-hup-old-key-1111111111",
        "sk-hup-new-key-2222222222",
        "sk-hup-wrong-key-333333333",
    );
    let upstream_key = "sk-upstream-never-logged-4444";
    let dir = temp_dir("hup");
    let keys = dir.join("keys.txt");
    std::fs::write(&keys, format!("{old_key}\n")).unwrap();
    let log_path = dir.join("router.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = free_port();
    let mut c = command(&dir);
    c.env(
        "ROUTER_SERVICES",
        json!([svc_with(&a, json!({"api_key": upstream_key}))]).to_string(),
    )
    .env("AUTH_KEYS_FILE", &keys)
    .env("HOST", "127.0.0.1")
    .env("PORT", port.to_string())
    .env("LOG_LEVEL", "debug")
    .stdout(Stdio::from(log.try_clone().unwrap()))
    .stderr(Stdio::from(log));
    let mut child = c.spawn().unwrap();
    wait_healthy(port).await;
    let client = http_client();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let chat = chat_request("test-model", json!({}));
    assert_eq!(
        client
            .post(url("/v1/chat/completions?api_key=sk-in-query-5555"))
            .bearer_auth(old_key)
            .json(&chat)
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        client
            .post(url("/v1/chat/completions"))
            .bearer_auth(wrong)
            .json(&chat)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client
            .get(url("/v1/models"))
            .bearer_auth(new_key)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    std::fs::write(&keys, format!("{new_key}\n")).unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut accepted = false;
    for _ in 0..250 {
        if client
            .get(url("/v1/models"))
            .bearer_auth(new_key)
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(accepted, "SIGHUP did not reload the keys file");
    assert_eq!(
        client
            .get(url("/v1/models"))
            .bearer_auth(old_key)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    sigterm(&child);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap()
            .unwrap()
            .code(),
        Some(0)
    );
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("client keys reloaded") && logs.contains("upstream call failed"),
        "{logs}"
    );
    for secret in [old_key, new_key, wrong, upstream_key, "sk-in-query-5555"] {
        assert!(
            !logs.contains(secret),
            "{secret} appears in the logs:\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_request_id_on_every_line_of_the_request() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(error(500, "A is down"));
    let dir = temp_dir("jsonlog");
    let log_path = dir.join("router.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = free_port();
    let mut c = command(&dir);
    c.env(
        "ROUTER_SERVICES",
        json!([svc(&a), svc_with(&b, json!({"priority": 1}))]).to_string(),
    )
    .env("ENABLE_AUTH", "false")
    .env("HOST", "127.0.0.1")
    .env("PORT", port.to_string())
    .env("LOG_FORMAT", "json")
    .stdout(Stdio::from(log.try_clone().unwrap()))
    .stderr(Stdio::from(log));
    let mut child = c.spawn().unwrap();
    wait_healthy(port).await;
    let r = http_client()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .header("x-request-id", "trace-me-42")
        .json(&chat_request("test-model", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
    assert_eq!(b.last_post().headers["x-request-id"], "trace-me-42");
    // A key reload runs on the blocking pool; its log line keeps the request id.
    let r = http_client()
        .post(format!("http://127.0.0.1:{port}/auth/reload-keys"))
        .header("x-request-id", "reload-me-7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sigterm(&child);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap()
            .unwrap()
            .code(),
        Some(0)
    );

    let logs = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of_request: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["span"]["request_id"] == "trace-me-42")
        .collect();
    let messages: Vec<&str> = of_request
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(messages.contains(&"upstream call failed"), "{messages:?}");
    let access = of_request
        .iter()
        .find(|l| l["message"] == "request")
        .expect("no access line with the request id");
    assert_eq!(
        (
            access["status"].as_u64(),
            access["service"].as_str(),
            access["attempts"].as_u64()
        ),
        (Some(200), Some("B"), Some(2))
    );
    assert_eq!(access["model"], "test-model");
    assert_eq!(access["path"], "/v1/chat/completions");
    assert!(access["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "client keys reloaded"
                && l["span"]["request_id"] == "reload-me-7"),
        "the reload's line lost its request id: {logs}"
    );
}

#[tokio::test]
async fn check_reports_an_unreachable_redis_as_a_warning_with_the_password_masked() {
    let dir = temp_dir("redischeck");
    let dead = free_port();
    let mut c = command(&dir);
    c.arg("check")
        .env(
            "ROUTER_SERVICES",
            json!([{"name": "a", "backend_type": "custom", "base_url": "http://127.0.0.1:9/v1"}])
                .to_string(),
        )
        .env(
            "REDIS_URL",
            format!("redis://:topsecretpw@127.0.0.1:{dead}/0"),
        );
    let (code, out) = output(c).await;
    assert_eq!(code, 0, "an unreachable Redis is a warning in check: {out}");
    assert!(
        out.contains("warning: redis at") && out.contains(":****@127.0.0.1"),
        "{out}"
    );
    assert!(!out.contains("topsecretpw"), "{out}");
}

/// `check` says why Redis refused: a wrong password or an untrusted certificate
/// is named, not reported as a timeout, and a Redis that accepts the connection
/// but never answers is a timeout of the whole 2 s; the password never appears.
#[tokio::test]
async fn check_names_why_redis_refused_the_connection() {
    let dir = temp_dir("redisrefused");
    let services =
        json!([{"name": "a", "backend_type": "custom", "base_url": "http://127.0.0.1:9/v1"}])
            .to_string();
    let locked = support::redis::RedisServer::with_password("the-right-one");
    let (tls, ca) = support::redis::RedisServer::with_private_ca(&dir.join("tls"));
    let hung = support::redis::RedisServer::start();
    hung.pause();
    let cases: [(String, &[&str]); 3] = [
        (
            format!("redis://:wrongpw-1234@127.0.0.1:{}/0", locked.port),
            &["authentication failed", "AuthenticationFailed"],
        ),
        (tls.url(), &["certificate", "UnknownIssuer"]),
        (hung.url(), &["no answer within 2000 ms"]),
    ];
    for (url, needles) in cases {
        let mut c = command(&dir);
        c.arg("check")
            .env("ROUTER_SERVICES", &services)
            .env("REDIS_URL", &url);
        let (code, out) = output(c).await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("is unreachable"), "{out}");
        assert!(
            needles.iter().any(|n| out.contains(n)),
            "the reason is missing ({needles:?}): {out}"
        );
        assert!(!out.contains("wrongpw-1234"), "{out}");
    }
    // The TLS server again, with its CA: reachable.
    let mut c = command(&dir);
    c.arg("check")
        .env("ROUTER_SERVICES", &services)
        .env("REDIS_URL", tls.url())
        .env("REDIS_CA_FILE", &ca);
    let (code, out) = output(c).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is reachable"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
