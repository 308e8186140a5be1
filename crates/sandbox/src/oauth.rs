//! The OAuth app the sandbox knows: an authorize page that approves at once, the token
//! endpoints of v1, v3 and 2026-03 (codes single-use and bound to their redirect URI,
//! refresh keeps the refresh token), token metadata, introspection and revocation.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use poem::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::clock::iso_millis;
use super::errors::{ApiError, uuid_v4};
use crate::credential::Credential;

/// How long an authorization code can be exchanged.
const CODE_LIFETIME_MS: i64 = 10 * 60 * 1000;

/// The scope every install gets besides the requested ones.
const BASE_SCOPE: &str = "oauth";

/// What a bearer token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenCheck {
    /// A live OAuth access token with these scopes.
    Valid(Vec<String>),
    /// An OAuth access token that expired at this instant (ms).
    Expired(i64),
    /// Not an access token of this sandbox.
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Code {
    redirect_uri: String,
    scopes: Vec<String>,
    expires_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Access {
    scopes: Vec<String>,
    expires_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Refresh {
    scopes: Vec<String>,
}

/// The codes and tokens the app issued (saved with the sandbox's state, so that a client's
/// tokens outlive a restart as they outlive nothing at HubSpot).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Tokens {
    codes: HashMap<String, Code>,
    access: HashMap<String, Access>,
    refresh: HashMap<String, Refresh>,
}

/// The sandbox's OAuth app and the tokens it issued.
#[derive(Debug)]
pub(crate) struct OAuthApp {
    client_id: String,
    client_secret: Credential,
    lifetime_secs: u64,
    portal_id: i64,
    app_id: i64,
    user_id: i64,
    tokens: Mutex<Tokens>,
}

/// An answer of the authorize page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Authorize {
    /// 302 to this URL.
    Redirect(String),
    /// 400 page with this explanation.
    Refused(String),
}

/// Form or query parameters.
pub(crate) type Params = HashMap<String, String>;

/// Parses `a=1&b=2`.
pub(crate) fn parse_params(raw: &[u8]) -> Params {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

impl OAuthApp {
    /// The app with these credentials.
    pub(crate) fn new(
        client_id: String,
        client_secret: Credential,
        lifetime_secs: u64,
        portal_id: i64,
        app_id: i64,
    ) -> Self {
        Self {
            client_id,
            client_secret,
            lifetime_secs,
            portal_id,
            app_id,
            user_id: 7_000_001,
            tokens: Mutex::new(Tokens::default()),
        }
    }

    /// This app, knowing the codes and tokens issued before a restart.
    pub(crate) fn with_tokens(self, tokens: Tokens) -> Self {
        *self.tokens() = tokens;
        self
    }

    /// The codes and tokens issued so far (locked while `f` runs).
    pub(crate) fn with_issued<R>(&self, f: impl FnOnce(&Tokens) -> R) -> R {
        f(&self.tokens())
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The authorize page: approves at once for the known client and a loopback-http or
    /// https redirect URI, granting the requested (and optional) scopes plus `oauth`.
    pub(crate) fn authorize(&self, q: &Params, now_ms: i64) -> Authorize {
        let client_ok = q.get("client_id").is_some_and(|c| *c == self.client_id);
        if !client_ok {
            return Authorize::Refused(
                "Unknown client_id: this app is not known to the sandbox.".to_owned(),
            );
        }
        let Some(redirect) = q.get("redirect_uri").filter(|r| redirect_allowed(r)) else {
            return Authorize::Refused(
                "redirect_uri must be an https URL, or http on localhost / a loopback address."
                    .to_owned(),
            );
        };
        let mut scopes: Vec<String> = Vec::new();
        for list in [q.get("scope"), q.get("optional_scope")]
            .into_iter()
            .flatten()
        {
            for s in list.split([' ', '+', ',']).filter(|s| !s.is_empty()) {
                if !scopes.iter().any(|x| x == s) {
                    scopes.push(s.to_owned());
                }
            }
        }
        if !scopes.iter().any(|s| s == BASE_SCOPE) {
            scopes.push(BASE_SCOPE.to_owned());
        }
        let code = uuid_v4();
        self.tokens().codes.insert(
            code.clone(),
            Code {
                redirect_uri: redirect.clone(),
                scopes,
                expires_ms: now_ms + CODE_LIFETIME_MS,
            },
        );
        let Ok(mut url) = url::Url::parse(redirect) else {
            return Authorize::Refused("redirect_uri is not a URL.".to_owned());
        };
        url.query_pairs_mut().append_pair("code", &code);
        if let Some(state) = q.get("state") {
            url.query_pairs_mut().append_pair("state", state);
        }
        Authorize::Redirect(url.to_string())
    }

    /// `POST /oauth/{v1,v3,2026-03}/token`.
    pub(crate) fn token(&self, p: &Params, now_ms: i64) -> Result<Value, ApiError> {
        let grant = p.get("grant_type").map(String::as_str).unwrap_or("");
        if !matches!(grant, "authorization_code" | "refresh_token") {
            return Err(oauth_error(
                "BAD_GRANT_TYPE",
                "unsupported_grant_type",
                &format!("grant_type must be authorization_code or refresh_token, got '{grant}'"),
            ));
        }
        self.check_client(p)?;
        let scopes = if grant == "authorization_code" {
            self.redeem_code(p, now_ms)?
        } else {
            self.refresh_scopes(p)?
        };
        let refresh = match p.get("refresh_token").filter(|_| grant == "refresh_token") {
            // HubSpot answers a refresh with the same refresh token.
            Some(r) => r.clone(),
            None => {
                let r = format!("na1-{}", uuid_v4());
                self.tokens().refresh.insert(
                    r.clone(),
                    Refresh {
                        scopes: scopes.clone(),
                    },
                );
                r
            }
        };
        let access = random_token();
        let expires_ms = now_ms + i64::try_from(self.lifetime_secs).unwrap_or(i64::MAX / 4) * 1000;
        self.tokens().access.insert(
            access.clone(),
            Access {
                scopes: scopes.clone(),
                expires_ms,
            },
        );
        Ok(json!({
            "token_type": "bearer",
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": self.lifetime_secs,
            "hub_id": self.portal_id,
            "user_id": self.user_id,
            "scopes": scopes,
            "token_use": "access_token",
        }))
    }

    fn check_client(&self, p: &Params) -> Result<(), ApiError> {
        if p.get("client_id").is_none_or(|c| *c != self.client_id) {
            return Err(oauth_error(
                "BAD_CLIENT_ID",
                "invalid_client",
                "missing or unknown client id",
            ));
        }
        if !p
            .get("client_secret")
            .is_some_and(|s| self.client_secret.matches(s))
        {
            return Err(oauth_error(
                "BAD_CLIENT_SECRET",
                "invalid_client",
                "missing or invalid client secret",
            ));
        }
        Ok(())
    }

    fn redeem_code(&self, p: &Params, now_ms: i64) -> Result<Vec<String>, ApiError> {
        let bad_code = || {
            oauth_error(
                "BAD_AUTH_CODE",
                "invalid_grant",
                "missing or unknown auth code",
            )
        };
        let code_value = p.get("code").ok_or_else(bad_code)?;
        let mut tokens = self.tokens();
        let code = tokens.codes.get(code_value).cloned().ok_or_else(bad_code)?;
        if code.expires_ms < now_ms {
            tokens.codes.remove(code_value);
            return Err(bad_code());
        }
        if p.get("redirect_uri") != Some(&code.redirect_uri) {
            return Err(oauth_error(
                "BAD_REDIRECT_URI",
                "invalid_grant",
                "redirect_uri does not match the one the code was issued for",
            ));
        }
        tokens.codes.remove(code_value);
        Ok(code.scopes)
    }

    fn refresh_scopes(&self, p: &Params) -> Result<Vec<String>, ApiError> {
        p.get("refresh_token")
            .and_then(|r| self.tokens().refresh.get(r).map(|r| r.scopes.clone()))
            .ok_or_else(|| {
                oauth_error(
                    "BAD_REFRESH_TOKEN",
                    "invalid_grant",
                    "missing or unknown refresh token",
                )
            })
    }

    /// Looks up a bearer token.
    pub(crate) fn check(&self, token: &str, now_ms: i64) -> TokenCheck {
        match self.tokens().access.get(token) {
            Some(a) if a.expires_ms > now_ms => TokenCheck::Valid(a.scopes.clone()),
            Some(a) => TokenCheck::Expired(a.expires_ms),
            None => TokenCheck::Unknown,
        }
    }

    /// `GET /oauth/v1/access-tokens/{token}`.
    pub(crate) fn access_token_info(&self, token: &str, now_ms: i64) -> Result<Value, ApiError> {
        let access = self.tokens().access.get(token).cloned();
        match access {
            Some(a) if a.expires_ms > now_ms => Ok(self.access_json(token, &a, now_ms)),
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                "Token not found or expired",
            )
            .field("status", "BAD_ACCESS_TOKEN")),
        }
    }

    /// `GET /oauth/v1/refresh-tokens/{token}`.
    pub(crate) fn refresh_token_info(&self, token: &str) -> Result<Value, ApiError> {
        let refresh = self.tokens().refresh.get(token).cloned();
        match refresh {
            Some(r) => Ok(self.refresh_json(token, &r)),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                "refresh token not found",
            )
            .field("status", "BAD_REFRESH_TOKEN")),
        }
    }

    /// `DELETE /oauth/v1/refresh-tokens/{token}`; true when it existed.
    pub(crate) fn delete_refresh(&self, token: &str) -> bool {
        self.tokens().refresh.remove(token).is_some()
    }

    /// `POST /oauth/{v3,2026-03}/token/introspect`.
    pub(crate) fn introspect(&self, p: &Params, now_ms: i64) -> Result<Value, ApiError> {
        self.check_client(p)?;
        let token = p.get("token").map(String::as_str).unwrap_or("");
        let tokens = self.tokens();
        let prefer_refresh = p
            .get("token_type_hint")
            .is_some_and(|h| h == "refresh_token");
        let access = tokens.access.get(token).filter(|a| a.expires_ms > now_ms);
        let refresh = tokens.refresh.get(token);
        let answer = match (access, refresh, prefer_refresh) {
            (_, Some(r), true) | (None, Some(r), false) => self.refresh_json(token, r),
            (Some(a), _, _) => self.access_json(token, a, now_ms),
            _ => json!({"active": false}),
        };
        Ok(answer)
    }

    /// `POST /oauth/{v3,2026-03}/token/revoke`: forgets the token (and, for a refresh token,
    /// what it grants).
    pub(crate) fn revoke(&self, p: &Params) -> Result<(), ApiError> {
        self.check_client(p)?;
        let token = p.get("token").map(String::as_str).unwrap_or("");
        let mut tokens = self.tokens();
        tokens.access.remove(token);
        tokens.refresh.remove(token);
        Ok(())
    }

    /// Ends the life of every access token now (tests of refresh and expiry).
    pub(crate) fn expire_all(&self, now_ms: i64) {
        for a in self.tokens().access.values_mut() {
            a.expires_ms = a.expires_ms.min(now_ms - 1000);
        }
    }

    fn access_json(&self, token: &str, a: &Access, now_ms: i64) -> Value {
        let expires_in = ((a.expires_ms - now_ms) / 1000).max(0);
        json!({
            "active": true,
            "token": token,
            "token_type": "access",
            "token_use": "access_token",
            "user": "sandbox-user@example.com",
            "user_id": self.user_id,
            "hub_id": self.portal_id,
            "hub_domain": format!("sandbox-{}.hubspot.com", self.portal_id),
            "app_id": self.app_id,
            "client_id": self.client_id,
            "scopes": a.scopes,
            "expires_in": expires_in,
            "is_private_distribution": false,
            "signed_access_token": {
                "appId": self.app_id,
                "appInstallId": format!("{}-{}", self.app_id, self.portal_id),
                "audience": "api.hubapi.com",
                "expiresAt": a.expires_ms,
                "hubId": self.portal_id,
                "hublet": "na1",
                "installingUserId": self.user_id,
                "isPrivateDistribution": false,
                "isServiceAccount": false,
                "isUserLevel": false,
                "newSignature": "sandbox",
                "scopeToScopeGroupPks": "",
                "scopes": a.scopes.join(" "),
                "signature": "sandbox",
                "trialScopeToScopeGroupPks": "",
                "trialScopes": "",
                "userId": self.user_id,
            },
            "expires_at": iso_millis(a.expires_ms),
        })
    }

    fn refresh_json(&self, token: &str, r: &Refresh) -> Value {
        json!({
            "active": true,
            "token": token,
            "token_type": "refresh",
            "token_use": "refresh_token",
            "user": "sandbox-user@example.com",
            "user_id": self.user_id,
            "hub_id": self.portal_id,
            "hub_domain": format!("sandbox-{}.hubspot.com", self.portal_id),
            "app_id": self.app_id,
            "client_id": self.client_id,
            "scopes": r.scopes,
        })
    }
}

/// HubSpot's OAuth error: the legacy `status`/`message` plus RFC 6749 `error` fields.
fn oauth_error(status: &str, error: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
        .field("status", status)
        .field("error", error)
        .field("error_description", message)
}

/// https anywhere, http only on localhost or a loopback address.
pub(crate) fn redirect_allowed(uri: &str) -> bool {
    let Ok(url) = url::Url::parse(uri) else {
        return false;
    };
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

fn random_token() -> String {
    let bytes: [u8; 48] = rand::random();
    format!(
        "C{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The 400 page for a refused authorization.
pub(crate) fn refused_page(reason: &str) -> String {
    let escaped = reason
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<!doctype html><html><head><title>Authorization failed</title></head><body>\
         <h1>Authorization failed</h1><p>{escaped}</p><p>(crm-sync HubSpot sandbox)</p></body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> OAuthApp {
        OAuthApp::new("cid".into(), Credential::new("secret"), 1800, 1000001, 42)
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn redirects_only_to_loopback_http_or_https() {
        assert!(redirect_allowed("http://localhost:3001/oauth-callback"));
        assert!(redirect_allowed("http://127.0.0.1:3001/cb"));
        assert!(redirect_allowed("https://example.com/cb"));
        assert!(!redirect_allowed("http://example.com/cb"));
        assert!(!redirect_allowed("ftp://localhost/cb"));
    }

    #[test]
    fn a_code_is_single_use() {
        let app = app();
        let Authorize::Redirect(url) = app.authorize(
            &params(&[
                ("client_id", "cid"),
                ("redirect_uri", "http://localhost/cb"),
                ("scope", "a b"),
                ("state", "s1"),
            ]),
            0,
        ) else {
            panic!("refused");
        };
        let url = url::Url::parse(&url).expect("url");
        let q: Params = url.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "s1");
        let form = params(&[
            ("grant_type", "authorization_code"),
            ("client_id", "cid"),
            ("client_secret", "secret"),
            ("redirect_uri", "http://localhost/cb"),
            ("code", &q["code"]),
        ]);
        let tokens = app.token(&form, 0).expect("exchanged");
        assert_eq!(tokens["scopes"], json!(["a", "b", "oauth"]));
        assert!(app.token(&form, 0).is_err(), "second use refused");
    }
}
