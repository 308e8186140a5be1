//! The built `crm-sync` binary as a child process: a clean environment, output captured in
//! files, waiting until it answers, and ending it gently (SIGTERM) or not at all (SIGKILL).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to answer `/healthz` (a loaded 2-core machine).
pub const STARTUP_LIMIT: Duration = Duration::from_secs(60);

/// The `security.encryption_key` every test run of the binary gets, as PostgreSQL requires
/// one (tests of the generated SQLite key remove it).
pub const TEST_ENCRYPTION_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// `crm-sync` with `dir` as its working directory, nothing inherited but PATH and HOME, and
/// [`TEST_ENCRYPTION_KEY`].
pub fn crm_sync(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crm-sync"));
    cmd.current_dir(dir)
        .env_clear()
        .stdin(Stdio::null())
        .env("CRM_SYNC__SECURITY__ENCRYPTION_KEY", TEST_ENCRYPTION_KEY);
    for var in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    cmd
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// A running `crm-sync` process with its output in files; killed if the test fails early.
pub struct Running {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    pub fn start(mut cmd: Command, dir: &Path) -> Running {
        let (stdout, stderr) = (dir.join("stdout.log"), dir.join("stderr.log"));
        let child = cmd
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn crm-sync");
        Running {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    pub fn output(&self) -> (String, String) {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        (read(&self.stdout), read(&self.stderr))
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the process is still owned")
    }

    /// Waits until `GET base/healthz` answers 200, failing fast when the process exits.
    pub async fn wait_healthy(&mut self, base: &str) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(resp) = http.get(format!("{base}/healthz")).send().await
                && resp.status() == 200
            {
                return;
            }
            if let Some(status) = self.child().try_wait().expect("poll the process") {
                panic!(
                    "crm-sync exited with {status} before answering: {:?}",
                    self.output()
                );
            }
            assert!(
                started.elapsed() < STARTUP_LIMIT,
                "no answer on {base}/healthz: {:?}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until stdout has a line, failing fast when the process exits.
    pub async fn first_stdout_line(&mut self) -> String {
        let started = Instant::now();
        loop {
            let (out, _) = self.output();
            if let Some(line) = out.lines().next().filter(|_| out.contains('\n')) {
                return line.to_owned();
            }
            if let Some(status) = self.child().try_wait().expect("poll the process") {
                panic!("crm-sync exited with {status}: {:?}", self.output());
            }
            assert!(started.elapsed() < STARTUP_LIMIT, "{:?}", self.output());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the process with SIGKILL (no signal handler, no shutdown: like a crash or the
    /// OOM killer) and returns once it is gone.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("the process is still owned");
        child.kill().expect("SIGKILL crm-sync");
        let status = child.wait().expect("wait for crm-sync");
        assert!(
            status.code().is_none(),
            "killed by a signal, not exited: {status}"
        );
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the process is still owned");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        child.wait().expect("wait for crm-sync")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The API token of the [`Serve`] processes.
pub const SERVE_API_TOKEN: &str = "serve-process-test-token";

/// How long a job may take to get somewhere in a [`Serve`] on a loaded 2-core machine,
/// orphan recovery (about 15–20 s) included.
pub const JOB_PATIENCE: Duration = Duration::from_secs(180);

/// `crm-sync serve` as a child process, configured through the environment only: the test
/// database, a free loopback port, [`SERVE_API_TOKEN`], and a HubSpot (the sandbox) reached
/// with its private-app token.
pub struct Serve {
    /// The process.
    pub process: Running,
    base: String,
    http: reqwest::Client,
}

impl Serve {
    /// Starts it in `dir` on the database at `db_url`, pointed at the sandbox at
    /// `hubspot_base_url`, and waits until it answers.
    pub async fn start(
        dir: &Path,
        db_url: &str,
        hubspot_base_url: &str,
        hubspot_token: &str,
    ) -> Serve {
        let port = free_port();
        let mut cmd: Command = crm_sync(dir);
        cmd.arg("serve")
            .env("CRM_SYNC__DATABASE__URL", db_url)
            .env("CRM_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("CRM_SYNC__API__TOKEN", SERVE_API_TOKEN)
            .env("CRM_SYNC__HUBSPOT__API_BASE_URL", hubspot_base_url)
            .env("CRM_SYNC__HUBSPOT__ACCESS_TOKEN", hubspot_token);
        let mut process = Running::start(cmd, dir);
        let base = format!("http://127.0.0.1:{port}");
        process.wait_healthy(&base).await;
        Serve {
            process,
            base,
            http: reqwest::Client::new(),
        }
    }

    /// The address of `path_and_query` on this server.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    /// `POST /api/jobs {"direction":"push"}`; the job it answers with.
    pub async fn enqueue_push(&self) -> serde_json::Value {
        self.enqueue(serde_json::json!({"direction": "push"})).await
    }

    /// `POST /api/jobs` with `body`; the job it answers with (202 expected).
    pub async fn enqueue(&self, body: serde_json::Value) -> serde_json::Value {
        let answer = self
            .http
            .post(format!("{}/api/jobs", self.base))
            .bearer_auth(SERVE_API_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("POST /api/jobs");
        assert_eq!(answer.status(), 202, "{:?}", self.process.output());
        answer.json().await.expect("a job")
    }

    /// `GET /api/jobs/{id}`.
    pub async fn job(&self, id: &str) -> serde_json::Value {
        let answer = self
            .http
            .get(format!("{}/api/jobs/{id}", self.base))
            .bearer_auth(SERVE_API_TOKEN)
            .send()
            .await
            .expect("GET /api/jobs/{id}");
        assert_eq!(answer.status(), 200, "{:?}", self.process.output());
        answer.json().await.expect("a job")
    }

    /// Polls the job until `done` holds; fails after [`JOB_PATIENCE`], naming `what` it waited
    /// for and showing the job and the process's output.
    pub async fn wait_for(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                started.elapsed() < JOB_PATIENCE,
                "waited {JOB_PATIENCE:?} for {what}: {job:#}\n{:?}",
                self.process.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no signal handler runs, no page boundary is reached, nothing is handed back.
    pub fn kill(self) {
        self.process.kill();
    }
}

/// `crm-sync worker` as a child process with its probe listener (`worker.bind`) on a free
/// loopback port, configured like [`Serve`]: the test database and the sandbox's private-app
/// token.
pub struct Worker {
    /// The process.
    pub process: Running,
    /// `http://127.0.0.1:<worker.bind port>`.
    pub base: String,
}

impl Worker {
    /// Starts it in `dir` on the database at `db_url`, pointed at the HubSpot at
    /// `hubspot_base_url`, and waits until its `/healthz` answers.
    pub async fn start(
        dir: &Path,
        db_url: &str,
        hubspot_base_url: &str,
        hubspot_token: &str,
    ) -> Worker {
        let port = free_port();
        let mut cmd: Command = crm_sync(dir);
        cmd.arg("worker")
            .env("CRM_SYNC__DATABASE__URL", db_url)
            .env("CRM_SYNC__WORKER__BIND", format!("127.0.0.1:{port}"))
            .env("CRM_SYNC__HUBSPOT__API_BASE_URL", hubspot_base_url)
            .env("CRM_SYNC__HUBSPOT__ACCESS_TOKEN", hubspot_token);
        let mut process = Running::start(cmd, dir);
        let base = format!("http://127.0.0.1:{port}");
        process.wait_healthy(&base).await;
        Worker { process, base }
    }
}

/// `GET base/metrics`: the page, after checking it is a 200 in the Prometheus text format.
pub async fn scrape(base: &str) -> String {
    let answer = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(answer.status(), 200);
    let kind = answer.headers()["content-type"]
        .to_str()
        .expect("a content type")
        .to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    answer.text().await.expect("the page")
}

impl Serve {
    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> &str {
        &self.base
    }
}
