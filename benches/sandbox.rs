//! Throughput of the HubSpot sandbox through its batch endpoints over real HTTP on
//! 127.0.0.1: `cargo bench --bench sandbox` (release). Prints contacts per second for batch
//! create, batch read and list. Target: at least 20,000 contacts/s.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Instant;

use crm_sync::sandbox::{Sandbox, SandboxArgs};
use serde_json::{Value, json};

mod support;

const TOTAL: usize = 100_000;
const BATCH: usize = 100;
const CLIENTS: usize = 4;

fn main() {
    support::run_to_exit(run());
}

async fn run() -> Result<(), support::BoxError> {
    let args = SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        rng_seed: Some(1),
        ..SandboxArgs::default()
    };
    let sb = Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let base = sb.base_url();
    let token = sb.access_token().to_owned();
    let http = reqwest::Client::new();

    let started = Instant::now();
    let per_client = TOTAL / CLIENTS;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(per_client);
            for batch in 0..per_client / BATCH {
                let inputs: Vec<Value> = (0..BATCH)
                    .map(|i| {
                        let n = client * per_client + batch * BATCH + i;
                        json!({"properties": {"email": format!("bench{n}@example.com"), "firstname": "Bench", "lastname": format!("No{n}")}, "associations": []})
                    })
                    .collect();
                let resp = http
                    .post(format!("{base}/crm/v3/objects/contacts/batch/create"))
                    .bearer_auth(&token)
                    .json(&json!({ "inputs": inputs }))
                    .send()
                    .await?;
                let body: Value = resp.error_for_status()?.json().await?;
                for r in body["results"].as_array().into_iter().flatten() {
                    ids.push(r["id"].as_str().unwrap_or("").to_owned());
                }
            }
            Ok::<Vec<String>, reqwest::Error>(ids)
        }));
    }
    let mut all_ids = Vec::with_capacity(TOTAL);
    for t in tasks {
        all_ids.extend(t.await??);
    }
    report("batch create", all_ids.len(), started);

    let started = Instant::now();
    let chunks: Vec<Vec<String>> = all_ids.chunks(BATCH).map(<[String]>::to_vec).collect();
    let per = chunks.len().div_ceil(CLIENTS);
    let mut tasks = Vec::new();
    for part in chunks.chunks(per).map(<[Vec<String>]>::to_vec) {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut read = 0;
            for chunk in part {
                let inputs: Vec<Value> = chunk.iter().map(|id| json!({"id": id})).collect();
                let body: Value = http
                    .post(format!("{base}/crm/v3/objects/contacts/batch/read"))
                    .bearer_auth(&token)
                    .json(&json!({"inputs": inputs, "properties": ["email", "firstname"], "propertiesWithHistory": []}))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                read += body["results"].as_array().map_or(0, Vec::len);
            }
            Ok::<usize, reqwest::Error>(read)
        }));
    }
    let mut read = 0;
    for t in tasks {
        read += t.await??;
    }
    report("batch read", read, started);

    let started = Instant::now();
    let mut listed = 0;
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{base}/crm/v3/objects/contacts?limit=100");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let body: Value = http
            .get(url)
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        listed += body["results"].as_array().map_or(0, Vec::len);
        match body["paging"]["next"]["after"].as_str() {
            Some(a) => after = Some(a.to_owned()),
            None => break,
        }
    }
    report("list (one client)", listed, started);
    sb.shutdown().await?;
    Ok(())
}

fn report(what: &str, n: usize, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{what:>20}: {n} contacts in {secs:.2} s = {:.0} contacts/s",
        n as f64 / secs
    );
}
