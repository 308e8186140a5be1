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
