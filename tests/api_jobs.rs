//! The job routes over real HTTP on 127.0.0.1, on SQLite and PostgreSQL.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;
#[macro_use]
mod jobs_support;

use crm_sync::api::{self, AppState};
use crm_sync::jobs::schedule::{self, Schedule};
use crm_sync::jobs::worker::{RetryPolicy, WorkerConfig, run_workers};
use crm_sync::secret::Secret;
use crm_sync::store::Store;
use jobs_support::{JobsDb, PageRunner, create_items};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "jobs-test-token-5e1d";

backend_tests!(
    fixture = JobsDb::new;
    posting_a_job_answers_202_with_its_location,
    a_second_post_gets_the_active_job_unless_it_forces,
    bad_requests_get_the_error_envelope,
    unknown_fields_and_unavailable_objects_are_refused_and_nothing_is_enqueued,
    a_dry_run_is_a_job_of_its_own_beside_the_real_one,
    a_body_is_json_or_refused_with_400_or_415,
    an_unknown_or_malformed_job_id_is_a_404,
    jobs_are_listed_newest_first_and_filtered_by_status,
    the_sample_routes_enqueue_a_push_and_a_pull,
    every_job_route_requires_the_token,
    a_job_can_be_cancelled_once,
    schedules_show_their_next_run_and_last_tick,
    a_running_job_shows_its_progress,
);

struct Server {
    addr: SocketAddr,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(store: &Store, schedules: Vec<Schedule>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AppState::new(store.clone(), Secret::new(TOKEN)).with_schedules(schedules);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(api::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("not JSON ({status}): {}", String::from_utf8_lossy(&body)));
        (status, headers, json)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, b) = self
            .send(self.http.get(self.url(path)).bearer_auth(TOKEN))
            .await;
        (s, b)
    }

    async fn post(
        &self,
        path: &str,
        body: Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(TOKEN)
                .json(&body),
        )
        .await
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

async fn posting_a_job_answers_202_with_its_location(db: &JobsDb) {
    let server = Server::start(&db.store, vec![]).await;
    let (status, headers, job) = server
        .post(
            "/api/jobs",
            json!({"direction": "pull", "mode": "verbose", "incremental": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(headers["location"], format!("/api/jobs/{id}").as_str());
    assert_eq!(job["direction"], "pull");
    assert_eq!(job["mode"], "verbose");
    assert_eq!(job["incremental"], true);
    assert_eq!(job["trigger"], "api");
    assert_eq!(job["status"], "queued");
    assert_eq!(job["attempts"], 0);
    assert_eq!(job["started_at"], Value::Null);
    assert_eq!(
        job["counts"],
        json!({"total": 0, "created": 0, "created_without_email": 0, "linked": 0,
               "upserted": 0, "unchanged": 0, "failed": 0, "unlinked": 0,
               "associations_created": 0, "associations_removed": 0, "associations_failed": 0})
    );
    assert_eq!(job["errors"], json!([]));

    let (status, fetched) = server.get(&format!("/api/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, job);
    server.stop().await;
}

async fn a_second_post_gets_the_active_job_unless_it_forces(db: &JobsDb) {
    let server = Server::start(&db.store, vec![]).await;
    let (_, _, first) = server.post("/api/jobs", json!({"direction": "push"})).await;
    let (status, _, second) = server.post("/api/jobs", json!({"direction": "push"})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(second["id"], first["id"]);
    let (status, _, forced) = server
        .post("/api/jobs", json!({"direction": "push", "force": true}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(forced["id"], first["id"]);
    assert_eq!(forced["forced"], true);
    server.stop().await;
}

async fn bad_requests_get_the_error_envelope(db: &JobsDb) {
    let server = Server::start(&db.store, vec![]).await;
    for (body, needle) in [
        (
            json!({"direction": "sideways"}),
            "expected \"push\" or \"pull\"",
        ),
        (
            json!({"direction": "pull", "mode": "link"}),
            "\"upsert\" or \"verbose\"",
        ),
        (
            json!({"direction": "push", "incremental": true}),
            "pull only",
        ),
        (json!({"mode": "link"}), "\"direction\" is required"),
        (json!({}), "\"direction\" is required"),
        (
            json!({"direction": "push", "force": "yes"}),
            "\"force\" must be true or false",
        ),
        (
            json!({"direction": "pull", "object": "deals"}),
            "expected \"contacts\" or \"companies\"",
        ),
        (
            json!({"direction": "push", "dry_run": "yes"}),
            "\"dry_run\" must be true or false",
        ),
        (json!(["push"]), "must be a JSON object"),
    ] {
        let (status, _, err) = server.post("/api/jobs", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(err["error"]["code"], "invalid_request");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {err}"
        );
    }
    let (status, _, err) = server
        .send(
            server
                .http
                .post(server.url("/api/jobs"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], "invalid_body");
    assert_eq!(
        db.store.list_jobs(None, 10).await.unwrap().len(),
        0,
        "nothing enqueued"
    );
    server.stop().await;
}

async fn unknown_fields_and_unavailable_objects_are_refused_and_nothing_is_enqueued(db: &JobsDb) {
    let server = Server::start(&db.store, vec![]).await;
    // A client written for a newer server must never start a real job it did not mean.
    for (body, needles) in [
        (
            json!({"direction": "push", "dryRun": true, "limit": 10}),
            vec!["\"dryRun\"", "\"limit\""],
        ),
        (
            json!({"direction": "pull", "objects": ["companies"]}),
            vec!["\"objects\""],
        ),
    ] {
        let (status, _, err) = server.post("/api/jobs", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(err["error"]["code"], "invalid_request", "{body}");
        let message = err["error"]["message"].as_str().unwrap();
        for needle in needles {
            assert!(message.contains(needle), "{body}: {message}");
        }
    }
    assert_eq!(
        db.store.list_jobs(None, 10).await.unwrap().len(),
        0,
        "nothing enqueued"
    );

    // The fields of this version, at their only values, are accepted and echoed.
    let (status, _, job) = server
        .post(
            "/api/jobs",
            json!({"direction": "push", "object": "contacts", "dry_run": false}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["object"], "contacts");
    assert_eq!(job["dry_run"], false);
    server.stop().await;
}

async fn a_dry_run_is_a_job_of_its_own_beside_the_real_one(db: &JobsDb) {
    let server = Server::start(&db.store, vec![]).await;
    let (_, _, real) = server.post("/api/jobs", json!({"direction": "push"})).await;
    assert_eq!(real["dry_run"], false);
    let (status, _, dry) = server
        .post("/api/jobs", json!({"direction": "push", "dry_run": true}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_ne!(dry["id"], real["id"], "never answered with the real push");
    // Each keeps its slot: asking again answers with the job of the same kind.
    let (_, _, again) = server
        .post("/api/jobs", json!({"direction": "push", "dry_run": true}))
        .await;
    assert_eq!(again["id"], dry["id"]);
    let (_, _, real_again) = server.post("/api/jobs", json!({"direction": "push"})).await;
    assert_eq!(real_again["id"], real["id"]);
    let (_, shown) = server
        .get(&format!("/api/jobs/{}", dry["id"].as_str().unwrap()))
        .await;
    assert_eq!(shown["dry_run"], true);
    server.stop().await;
}

async fn a_body_is_json_or_refused_with_400_or_415(db: &JobsDb) {
    let server = Server::start(&db.store, vec![]).await;
    let post = || server.http.post(server.url("/api/jobs")).bearer_auth(TOKEN);
    let (status, _, err) = server.send(post().body(r#"{"direction":"push"}"#)).await;
    assert_eq!(
        status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "no Content-Type"
    );
    assert_eq!(err["error"]["code"], "unsupported_media_type");
    let (status, _, err) = server
        .send(
            post()
                .header("content-type", "text/plain")
                .body(r#"{"direction":"push"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("text/plain")
    );
    for not_json in ["", "{\"direction\":", "push"] {
        let (status, _, err) = server
            .send(
                post()
                    .header("content-type", "application/json")
                    .body(not_json),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{not_json:?}");
        assert_eq!(err["error"]["code"], "invalid_body");
    }
    let (status, _, _) = server
        .send(
            post()
                .header("content-type", "application/json; charset=utf-8")
                .body(r#"{"direction":"pull"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    server.stop().await;
}

async fn an_unknown_or_malformed_job_id_is_a_404(db: &JobsDb) {
    let server = Server::start(&db.store, vec![]).await;
    let unknown = crm_sync::ids::JobId::generate().to_string();
    for id in [unknown.as_str(), "not-a-job-id"] {
        let (status, err) = server.get(&format!("/api/jobs/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(err["error"]["code"], "not_found");
        assert!(err["error"]["message"].as_str().unwrap().contains(id));
    }
    server.stop().await;
}

async fn jobs_are_listed_newest_first_and_filtered_by_status(db: &JobsDb) {
    let server = Server::start(&db.store, vec![]).await;
    let (_, _, push) = server.post("/api/jobs", json!({"direction": "push"})).await;
    let (_, _, pull) = server.post("/api/jobs", json!({"direction": "pull"})).await;
    let (status, list) = server.get("/api/jobs").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<_> = list["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].clone())
        .collect();
    assert_eq!(ids, vec![pull["id"].clone(), push["id"].clone()]);

    let (_, one) = server.get("/api/jobs?limit=1").await;
    assert_eq!(one["results"].as_array().unwrap().len(), 1);
    let (_, none) = server.get("/api/jobs?status=succeeded").await;
    assert_eq!(none["results"], json!([]));
    let (_, queued) = server.get("/api/jobs?status=queued").await;
    assert_eq!(queued["results"].as_array().unwrap().len(), 2);
    let (status, all) = server.get("/api/jobs?status=").await;
    assert_eq!(status, StatusCode::OK, "an empty status filters nothing");
    assert_eq!(all["results"].as_array().unwrap().len(), 2);

    let (status, err) = server.get("/api/jobs?status=done").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["code"], "invalid_parameter");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("succeeded"),
        "{err}"
    );
    let (status, _) = server.get("/api/jobs?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    server.stop().await;
}

async fn the_sample_routes_enqueue_a_push_and_a_pull(db: &JobsDb) {
    let server = Server::start(&db.store, vec![]).await;
    let (status, push) = server.get("/sync-contacts").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (push["direction"].as_str(), push["mode"].as_str()),
        (Some("push"), Some("link"))
    );
    let (status, pull) = server.get("/initial-contacts-sync").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (pull["direction"].as_str(), pull["mode"].as_str()),
        (Some("pull"), Some("upsert"))
    );
    let (_, again) = server.get("/sync-contacts").await;
    assert_eq!(again["id"], push["id"], "no pile-up");
    server.stop().await;
}

async fn every_job_route_requires_the_token(db: &JobsDb) {
    let server = Server::start(&db.store, vec![]).await;
    let id = crm_sync::ids::JobId::generate();
    for (method, path) in [
        ("POST", "/api/jobs".to_owned()),
        ("GET", "/api/jobs".to_owned()),
        ("GET", format!("/api/jobs/{id}")),
        ("POST", format!("/api/jobs/{id}/cancel")),
        ("GET", "/api/schedules".to_owned()),
        ("GET", "/sync-contacts".to_owned()),
        ("GET", "/initial-contacts-sync".to_owned()),
    ] {
        let req = match method {
            "POST" => server
                .http
                .post(server.url(&path))
                .json(&json!({"direction": "push"})),
            _ => server.http.get(server.url(&path)),
        };
        let (status, _, err) = server.send(req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(err["error"]["code"], "unauthorized");
    }
    assert_eq!(db.store.list_jobs(None, 10).await.unwrap().len(), 0);
    server.stop().await;
}

async fn a_job_can_be_cancelled_once(db: &JobsDb) {
    let server = Server::start(&db.store, vec![]).await;
    let (_, _, job) = server.post("/api/jobs", json!({"direction": "push"})).await;
    let id = job["id"].as_str().unwrap();
    let (status, _, cancelled) = server
        .post(&format!("/api/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["finished_at"].is_string());
    let (status, _, err) = server
        .post(&format!("/api/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["error"]["code"], "conflict");
    let (status, _, _) = server.post("/api/jobs/nope/cancel", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The direction is free again.
    let (_, _, next) = server.post("/api/jobs", json!({"direction": "push"})).await;
    assert_ne!(next["id"], job["id"]);
    server.stop().await;
}

async fn schedules_show_their_next_run_and_last_tick(db: &JobsDb) {
    let hourly = Schedule::new("0 * * * *", "pull", None, None).unwrap();
    let server = Server::start(&db.store, vec![hourly.clone()]).await;
    let (status, list) = server.get("/api/schedules").await;
    assert_eq!(status, StatusCode::OK);
    let item = &list["results"][0];
    assert_eq!(item["cron"], "0 * * * *");
    assert_eq!(item["direction"], "pull");
    assert_eq!(item["incremental"], true);
    assert!(
        item["next_run"].as_str().unwrap().ends_with(":00:00.000Z"),
        "{item}"
    );
    assert_eq!(item["last_tick"], Value::Null);

    let fired = schedule::fire(&db.store, &hourly, 1_900_000_800)
        .await
        .unwrap();
    let schedule::Fired::Queued(job_id) = fired else {
        panic!("{fired:?}");
    };
    let (_, list) = server.get("/api/schedules").await;
    let tick = &list["results"][0]["last_tick"];
    assert_eq!(tick["outcome"], "queued");
    assert_eq!(tick["job_id"], job_id.to_string());
    let (_, job) = server.get(&format!("/api/jobs/{job_id}")).await;
    assert_eq!(job["trigger"], "schedule");
    server.stop().await;
}

async fn a_running_job_shows_its_progress(db: &JobsDb) {
    create_items(&db.store, 12).await;
    let server = Server::start(&db.store, vec![]).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let config = WorkerConfig {
        sqlite_poll_interval: Duration::from_millis(100),
        retry: RetryPolicy::default(),
        ..WorkerConfig::default()
    };
    let workers = tokio::spawn(run_workers(
        db.store.clone(),
        PageRunner::new(3, Duration::from_millis(150)).arc(),
        vec![],
        config,
        async {
            let _ = stopped.await;
        },
    ));
    let (_, _, job) = server.post("/api/jobs", json!({"direction": "push"})).await;
    let path = format!("/api/jobs/{}", job["id"].as_str().unwrap());
    let started = std::time::Instant::now();
    let mut saw_progress = false;
    let done = loop {
        let (_, job) = server.get(&path).await;
        if job["status"] == "running" && job["progress"]["processed"].as_u64().unwrap() > 0 {
            assert_eq!(job["progress"]["total"], 12);
            assert!(job["started_at"].is_string());
            saw_progress = true;
        }
        if job["status"] == "succeeded" {
            break job;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{job}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    };
    let _ = stop.send(());
    workers.await.unwrap().unwrap();
    assert!(saw_progress, "progress was visible while the job ran");
    assert_eq!(done["counts"]["total"], 12);
    assert_eq!(done["progress"]["processed"], 12);
    assert!(done["finished_at"].is_string());
    server.stop().await;
}
