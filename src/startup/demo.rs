//! `serve --sandbox`: an in-process HubSpot sandbox wired to the service the way a real HubSpot
//! app is, so that the demo exercises the real paths.
//!
//! - The service gets the sandbox app's `client_id` and `client_secret` (no private-app token),
//!   so it talks to the sandbox through OAuth, with its tokens encrypted in the database.
//! - The sandbox sends its webhooks to `server.public_url` + `/webhooks/hubspot`, signed with
//!   that client secret, which is what the service verifies them with.
//! - Once the API listens, the service installs itself ([`connect`]) as the operator: it opens
//!   its own install page with the API token, follows the install link through the sandbox's authorize page (which approves at
//!   once) and back to its own OAuth callback, which exchanges the code and stores the tokens
//!   — the same requests a person's browser makes, so the quick start needs no click.
//!
//! The sandbox keeps its account in `data/sandbox-state.json` (see [`SANDBOX_STATE_FILE`]), so
//! a restart resumes the same portal, contacts and tokens, as a real HubSpot account would;
//! `--sandbox-fresh` starts a new account with another portal id. The demo installs itself at
//! every start all the same (harmless on a resumed account, needed on a new one). It never
//! replaces another account's connection: when the database holds tokens for a portal other
//! than the sandbox's, the demo uses the sandbox's private-app token instead and leaves those
//! tokens alone.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{DemoSandbox, StartupError};
use crate::api::webhook_route::WEBHOOK_PATH;
use crate::config::{ConfigError, Settings};
use crate::sandbox::{Sandbox, SandboxArgs, SandboxHandle};
use crate::secret::Secret;
use crate::store::Store;

/// How the demo's HubSpot client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DemoAuth {
    /// OAuth with the sandbox app; the service installs itself once it listens.
    OAuth,
    /// The sandbox's private-app token (the database holds another account's connection).
    PrivateApp,
}

/// Contacts a new sandbox account of `serve --sandbox` starts with, so a pull has work to do
/// (a resumed one has its own).
const DEMO_SANDBOX_CONTACTS: usize = 250;

/// The sandbox's state file in the data folder.
pub(super) const SANDBOX_STATE_FILE: &str = "sandbox-state.json";

/// Starts the sandbox on `--sandbox-port` (or a free loopback port), resuming its account from
/// the data folder unless `--sandbox-fresh`, sending webhooks to this service, and points the
/// HubSpot settings at it with its OAuth app's credentials.
pub(super) async fn start_sandbox(
    settings: &mut Settings,
    data: &Path,
    options: DemoSandbox,
) -> Result<SandboxHandle, StartupError> {
    let webhook_url =
        settings
            .server
            .public_url
            .join(WEBHOOK_PATH)
            .map_err(|e| ConfigError::Invalid {
                key: "server.public_url".into(),
                problem: e.to_string(),
            })?;
    let args = SandboxArgs {
        contacts: DEMO_SANDBOX_CONTACTS,
        webhook_url: Some(webhook_url.to_string()),
        state_file: Some(data.join(SANDBOX_STATE_FILE)),
        fresh: options.fresh,
        fresh_flag: "--sandbox-fresh",
        ..SandboxArgs::default()
    };
    let port = options.port.unwrap_or(0);
    let sandbox = Sandbox::start(args, SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    settings.use_hubspot_app(
        &sandbox.base_url(),
        &sandbox.authorize_url(),
        sandbox.client_id().to_owned(),
        Secret::new(sandbox.client_secret()),
    )?;
    tracing::info!(
        sandbox = %sandbox.base_url(),
        portal_id = sandbox.portal_id(),
        resumed = sandbox.resumed(),
        contacts = sandbox.contact_count(),
        webhooks = %webhook_url,
        "started an in-process HubSpot sandbox; the service connects to it through OAuth and \
         receives its webhooks"
    );
    Ok(sandbox)
}

/// OAuth, unless the database holds another account's connection (then the sandbox's
/// private-app token, set in `settings`, so that those tokens are neither used against the
/// sandbox nor replaced).
pub(super) async fn choose_auth(
    settings: &mut Settings,
    store: &Store,
    sandbox: &SandboxHandle,
) -> Result<DemoAuth, StartupError> {
    let current = store.current_credentials().await?;
    match current {
        Some(row) if row.portal_id.0 != sandbox.portal_id() => {
            tracing::warn!(
                portal_id = row.portal_id.0,
                "this database is connected to another HubSpot account; --sandbox leaves that \
                 connection alone and uses the sandbox's private-app token"
            );
            settings.hubspot.access_token = Some(Secret::new(sandbox.access_token()));
            Ok(DemoAuth::PrivateApp)
        }
        _ => Ok(DemoAuth::OAuth),
    }
}

/// Why the service could not install itself in the sandbox.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    /// A request failed outright.
    #[error("{step}: {source}")]
    Http {
        /// Which step.
        step: &'static str,
        /// The failure.
        source: reqwest::Error,
    },
    /// A step did not answer as a browser would expect.
    #[error("{step}: {problem}")]
    Step {
        /// Which step.
        step: &'static str,
        /// What was wrong.
        problem: String,
    },
}

/// Installs the service in the sandbox through its own install page and callback, as the
/// operator's browser would (the install page shows its link only to the operator, so the
/// page is opened with the API token), talking to the service at `addr`. Waits (briefly) for
/// the API to listen.
pub(super) async fn connect(addr: SocketAddr, api_token: &Secret) -> Result<(), ConnectError> {
    let base = format!("http://{addr}");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|source| ConnectError::Http {
            step: "building an HTTP client",
            source,
        })?;
    let page = open_install_page(&browser, &base, api_token).await?;
    let cookie = page
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .ok_or_else(|| step("the install page", "it set no browser cookie".to_owned()))?;
    let body = page.text().await.map_err(|source| ConnectError::Http {
        step: "reading the install page",
        source,
    })?;
    let link = install_link(&body)
        .ok_or_else(|| step("the install page", "it shows no install link".to_owned()))?;
    let approved = browser
        .get(&link)
        .send()
        .await
        .map_err(|source| ConnectError::Http {
            step: "the sandbox's authorize page",
            source,
        })?;
    let back = redirect_target(&approved, "the sandbox's authorize page")?;
    // HubSpot sends the browser to the redirect URI (`server.public_url`); this service is
    // at `addr`, so only the path and query are kept.
    let back = url::Url::parse(&back).map_err(|e| step("the sandbox's redirect", e.to_string()))?;
    let callback = format!("{base}{}?{}", back.path(), back.query().unwrap_or_default());
    let done = browser
        .get(&callback)
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .map_err(|source| ConnectError::Http {
            step: "the OAuth callback",
            source,
        })?;
    let landed = redirect_target(&done, "the OAuth callback")?;
    if landed != "/" {
        return Err(step(
            "the OAuth callback",
            format!("it sent the browser to {landed} instead of the status page"),
        ));
    }
    Ok(())
}

/// `GET /api/install`, retried while the API is still starting.
async fn open_install_page(
    browser: &reqwest::Client,
    base: &str,
    api_token: &Secret,
) -> Result<reqwest::Response, ConnectError> {
    let started = Instant::now();
    loop {
        let request = browser
            .get(format!("{base}/api/install"))
            .bearer_auth(api_token.expose());
        match request.send().await {
            Ok(page) if page.status().is_success() => return Ok(page),
            Ok(page) => {
                let status = page.status();
                let text = page.text().await.unwrap_or_default();
                return Err(step(
                    "the install page",
                    format!("{status}: {}", text.chars().take(300).collect::<String>()),
                ));
            }
            Err(e) if e.is_connect() && started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(source) => {
                return Err(ConnectError::Http {
                    step: "the install page",
                    source,
                });
            }
        }
    }
}

/// The `href` of the install page's install button, unescaped.
fn install_link(page: &str) -> Option<String> {
    const MARK: &str = "id=\"install\" href=\"";
    let start = page.find(MARK)? + MARK.len();
    let end = start + page[start..].find('"')?;
    Some(page[start..end].replace("&amp;", "&"))
}

/// Where a redirect answer sends the browser.
fn redirect_target(answer: &reqwest::Response, what: &'static str) -> Result<String, ConnectError> {
    if !answer.status().is_redirection() {
        return Err(step(
            what,
            format!("expected a redirect, got {}", answer.status()),
        ));
    }
    answer
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| step(what, "a redirect without a location".to_owned()))
}

fn step(step: &'static str, problem: String) -> ConnectError {
    ConnectError::Step { step, problem }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_install_link_is_read_from_the_page_unescaped() {
        let page = r#"<p><a class="button" id="install" href="http://h/oauth/authorize?a=1&amp;b=2">Install</a></p>"#;
        assert_eq!(
            install_link(page).as_deref(),
            Some("http://h/oauth/authorize?a=1&b=2")
        );
        assert_eq!(install_link("<p>no app</p>"), None);
    }
}
