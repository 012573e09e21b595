//! A real `redis-server` per test, on an ephemeral loopback port, with no
//! persistence; stopped (killed) when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    password: Option<String>,
    /// TLS only (`--port 0 --tls-port`): the URL is `rediss://`.
    tls: Option<Vec<String>>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on(free_port(), None, None)
    }

    pub fn with_password(password: &str) -> Self {
        Self::start_on(free_port(), Some(password.to_owned()), None)
    }

    /// A TLS-only server whose certificate (for 127.0.0.1) is issued by a
    /// throwaway CA made with the `openssl` command in `dir`; returns the server
    /// and the CA's PEM file.
    pub fn with_private_ca(dir: &Path) -> (Self, PathBuf) {
        std::fs::create_dir_all(dir).unwrap();
        let f = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl (scripts/test installs it: apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let (ca_key, ca_pem) = (f("ca.key"), f("ca.pem"));
        let (key, csr, pem, ext) = (
            f("server.key"),
            f("server.csr"),
            f("server.pem"),
            f("server.ext"),
        );
        // `openssl req` with a fresh P-256 key: the self-signed CA, then the server's CSR.
        let req = |extra: &[&str], key: &str, out: &str, subject: &str| {
            let mut args = vec!["req"];
            args.extend_from_slice(extra);
            let ec = "ec_paramgen_curve:prime256v1";
            let common = ["-newkey", "ec", "-pkeyopt", ec, "-nodes", "-keyout", key];
            args.extend_from_slice(&common);
            args.extend_from_slice(&["-out", out, "-subj", subject]);
            openssl(&args);
        };
        req(
            &["-x509", "-days", "2"],
            &ca_key,
            &ca_pem,
            "/CN=llm-router test CA",
        );
        req(&[], &key, &csr, "/CN=127.0.0.1");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
        let port = free_port().to_string();
        let tls = [
            ("--port", "0"),
            ("--tls-port", &port),
            ("--tls-cert-file", &pem),
            ("--tls-key-file", &key),
            ("--tls-ca-cert-file", &ca_pem),
            ("--tls-auth-clients", "no"),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect();
        let port = port.parse().unwrap();
        (Self::start_on(port, None, Some(tls)), dir.join("ca.pem"))
    }

    fn start_on(port: u16, password: Option<String>, tls: Option<Vec<String>>) -> Self {
        let mut cmd = Command::new("redis-server");
        match &tls {
            Some(args) => cmd.args(args),
            None => cmd.args(["--port", &port.to_string()]),
        };
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(pw) = &password {
            cmd.args(["--requirepass", pw]);
        }
        let child = cmd
            .spawn()
            .expect("redis-server (scripts/test installs it: apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child: Some(child),
            port,
            password,
            tls,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.password {
            Some(pw) => format!("{scheme}://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("{scheme}://127.0.0.1:{}/0", self.port),
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .map(|s| s.success());
            assert!(matches!(ok, Ok(true)), "kill {sig} failed");
        }
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// `redis-cli ARGS` against this server, its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if let Some(pw) = &self.password {
            cmd.args(["--no-auth-warning", "-a", pw]);
        }
        let out = cmd
            .args(args)
            .output()
            .expect("redis-cli (installed with redis-server)");
        assert!(out.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key in the server (`redis-cli --scan`).
    pub fn keys(&self) -> Vec<String> {
        self.cli(&["--scan"]).lines().map(str::to_owned).collect()
    }

    /// How many `EVALSHA` calls the server has run (`INFO commandstats`).
    pub fn script_calls(&self) -> u64 {
        let stats = self.cli(&["INFO", "commandstats"]);
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().expect("a number of calls"))
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh server on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let again = Self::start_on(self.port, self.password.clone(), self.tls.clone());
        self.child = again.child_take();
    }

    fn child_take(mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume_quietly();
        self.kill();
    }
}

impl RedisServer {
    fn resume_quietly(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
