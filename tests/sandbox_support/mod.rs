//! Shared fixtures for the sandbox's company and association specs: a sandbox on loopback, a
//! small HubSpot-speaking HTTP helper, and a webhook receiver that collects events.

#![allow(dead_code)] // each test file uses a different part of this module

use std::net::SocketAddr;
use std::time::Duration;

use crm_sync::sandbox::{Sandbox, SandboxArgs, SandboxHandle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The v3 companies path.
pub const COMPANIES: &str = "/crm/v3/objects/companies";
/// The v3 contacts path.
pub const CONTACTS: &str = "/crm/v3/objects/contacts";
/// The v4 batch associations path from contacts to companies.
pub const CONTACT_TO_COMPANY: &str = "/crm/v4/associations/contacts/companies";
/// The v4 batch associations path from companies to contacts.
pub const COMPANY_TO_CONTACT: &str = "/crm/v4/associations/companies/contacts";

/// A sandbox without rate limits, with a fixed seed.
pub fn args() -> SandboxArgs {
    SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        associations_per_10s: 0,
        rng_seed: Some(7),
        ..SandboxArgs::default()
    }
}

/// Starts a sandbox on a free loopback port.
pub async fn start(args: SandboxArgs) -> SandboxHandle {
    Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("sandbox starts")
}

/// HubSpot's API as a client sees it, with the sandbox's private-app token.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
    user: Option<String>,
}

/// An answer: status, headers and JSON body (`null` when empty).
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body.
    pub body: Value,
}

impl Api {
    /// The app's calls.
    pub fn new(sb: &SandboxHandle) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: sb.base_url(),
            token: sb.access_token().to_owned(),
            user: None,
        }
    }

    /// A person's actions in HubSpot's UI (`x-sandbox-user-id`).
    pub fn as_person(sb: &SandboxHandle, user: &str) -> Self {
        Self {
            user: Some(user.to_owned()),
            ..Self::new(sb)
        }
    }

    /// Sends one request.
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token);
        if let Some(user) = &self.user {
            req = req.header(crm_sync::sandbox::USER_HEADER, user);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("answer");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// GET.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let a = self.send(Method::GET, path, None).await;
        (a.status, a.body)
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let a = self.send(Method::POST, path, Some(body)).await;
        (a.status, a.body)
    }

    /// PUT with a JSON body (or none).
    pub async fn put(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let a = self.send(Method::PUT, path, body).await;
        (a.status, a.body)
    }

    /// PATCH with a JSON body.
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let a = self.send(Method::PATCH, path, Some(body)).await;
        (a.status, a.body)
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> StatusCode {
        self.send(Method::DELETE, path, None).await.status
    }

    /// Creates companies with these property maps in one batch; their ids in input order.
    pub async fn create_companies(&self, inputs: &[Value]) -> Vec<String> {
        let inputs: Vec<Value> = inputs.iter().map(|p| json!({ "properties": p })).collect();
        let (status, body) = self
            .post(
                &format!("{COMPANIES}/batch/create"),
                json!({ "inputs": inputs }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids(&body)
    }

    /// Creates contacts with these emails in one batch; their ids in input order.
    pub async fn create_contacts(&self, emails: &[&str]) -> Vec<String> {
        let inputs: Vec<Value> = emails
            .iter()
            .map(|e| json!({ "properties": { "email": e } }))
            .collect();
        let (status, body) = self
            .post(
                &format!("{CONTACTS}/batch/create"),
                json!({ "inputs": inputs }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids(&body)
    }
}

/// The `id`s of a batch answer's `results`, in order.
pub fn ids(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

/// A webhook receiver on loopback collecting every event it is sent.
pub struct Hooks {
    /// The URL to give the sandbox.
    pub url: String,
    rx: tokio::sync::mpsc::UnboundedReceiver<Vec<Value>>,
    /// Every event received so far.
    pub events: Vec<Value>,
}

impl Hooks {
    /// Starts the receiver.
    pub async fn start() -> Self {
        use poem::{Route, Server, handler, listener::TcpListener, post, web::Data};
        #[handler]
        async fn hook(
            body: Vec<u8>,
            tx: Data<&tokio::sync::mpsc::UnboundedSender<Vec<Value>>>,
        ) -> &'static str {
            let batch: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
            let _ = tx.send(batch);
            "ok"
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let app = poem::EndpointExt::data(Route::new().at("/hook", post(hook)), tx);
        tokio::spawn(Server::new(TcpListener::bind(addr.to_string())).run(app));
        Self {
            url: format!("http://{addr}/hook"),
            rx,
            events: Vec::new(),
        }
    }

    /// Waits until `done` holds for the events received (at most 20 s), then returns them.
    pub async fn until(&mut self, done: impl Fn(&[Value]) -> bool) -> &[Value] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(&self.events) {
            let batch = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the expected webhooks did not arrive; got {}",
                        Value::Array(self.events.clone())
                    )
                })
                .expect("receiver open");
            self.events.extend(batch);
        }
        &self.events
    }

    /// Waits a little for stragglers and returns everything received.
    pub async fn settle(&mut self) -> &[Value] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(batch) = self.rx.try_recv() {
            self.events.extend(batch);
        }
        &self.events
    }
}

/// The events of one subscription type.
pub fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["subscriptionType"] == kind)
        .collect()
}
