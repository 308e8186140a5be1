//! What keeping the sandbox's state costs, over real HTTP on 127.0.0.1:
//! `cargo bench --bench sandbox_state` (release). Creates 100,000 contacts with 4 clients
//! (100 per batch) into a sandbox without and with a state file, then times one full save of
//! the 100,000-contact state and the start that resumes it.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use crm_sync::sandbox::{Sandbox, SandboxArgs, SandboxHandle};
use serde_json::{Value, json};

mod support;

const TOTAL: usize = 100_000;
const BATCH: usize = 100;
const CLIENTS: usize = 4;

fn main() {
    support::run_to_exit(run());
}

fn args(state_file: Option<PathBuf>) -> SandboxArgs {
    SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        rng_seed: Some(1),
        state_file,
        ..SandboxArgs::default()
    }
}

async fn start(state_file: Option<PathBuf>) -> Result<SandboxHandle, support::BoxError> {
    Ok(Sandbox::start(args(state_file), SocketAddr::from(([127, 0, 0, 1], 0))).await?)
}

async fn run() -> Result<(), support::BoxError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sandbox-state.json");

    let sb = start(None).await?;
    let rate = create_all(&sb).await?;
    println!("batch create, in memory:       {rate:.0} contacts/s");
    sb.shutdown().await?;

    let sb = start(Some(path.clone())).await?;
    let rate = create_all(&sb).await?;
    println!("batch create, with state file: {rate:.0} contacts/s");
    // A change that touches nothing but makes the next save a full one.
    sb.set_variants(sb.variants());
    let started = Instant::now();
    sb.save().await?;
    let saved = started.elapsed();
    let stalled = read_during_a_save(&sb).await?;
    sb.shutdown().await?;
    let size = std::fs::metadata(&path)?.len();
    println!(
        "save of {TOTAL} contacts: {:.0} ms, {:.1} MB; a read sent 5 ms into a save took {:.0} ms",
        saved.as_secs_f64() * 1000.0,
        size as f64 / 1e6,
        stalled.as_secs_f64() * 1000.0
    );

    let started = Instant::now();
    let sb = start(Some(path)).await?;
    let loaded = started.elapsed();
    if !sb.resumed() || sb.contact_count() != TOTAL {
        return Err(format!("resumed {} contacts, not {TOTAL}", sb.contact_count()).into());
    }
    println!(
        "start resuming {TOTAL} contacts: {:.0} ms; peak RSS {} MB",
        loaded.as_secs_f64() * 1000.0,
        support::peak_rss_mb().unwrap_or(0)
    );
    sb.shutdown().await?;
    Ok(())
}

/// How long one read waits when it arrives while a full save holds the data (serialising
/// happens under the lock; writing the file does not).
async fn read_during_a_save(sb: &SandboxHandle) -> Result<std::time::Duration, support::BoxError> {
    let http = reqwest::Client::new();
    let url = format!("{}/crm/v3/objects/contacts/10000000001", sb.base_url());
    http.get(&url).bearer_auth(sb.access_token()).send().await?;
    sb.set_variants(sb.variants());
    let save = sb.save();
    let read = async {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let started = Instant::now();
        http.get(&url)
            .bearer_auth(sb.access_token())
            .send()
            .await?
            .error_for_status()?;
        Ok::<_, reqwest::Error>(started.elapsed())
    };
    let (saved, read) = tokio::join!(save, read);
    saved?;
    Ok(read?)
}

/// Creates [`TOTAL`] contacts with [`CLIENTS`] clients; contacts per second.
async fn create_all(sb: &SandboxHandle) -> Result<f64, support::BoxError> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let per_client = TOTAL / CLIENTS;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (http, base, token) = (http.clone(), sb.base_url(), sb.access_token().to_owned());
        tasks.push(tokio::spawn(async move {
            for batch in 0..per_client / BATCH {
                let inputs: Vec<Value> = (0..BATCH)
                    .map(|i| {
                        let n = client * per_client + batch * BATCH + i;
                        json!({"properties": {"email": format!("bench{n}@example.com"),
                            "firstname": "Bench", "lastname": format!("No{n}")}})
                    })
                    .collect();
                http.post(format!("{base}/crm/v3/objects/contacts/batch/create"))
                    .bearer_auth(&token)
                    .json(&json!({ "inputs": inputs }))
                    .send()
                    .await?
                    .error_for_status()?;
            }
            Ok::<(), reqwest::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(TOTAL as f64 / started.elapsed().as_secs_f64())
}
