//! The OAuth consent step as a browser goes through it, against the sandbox.

use crm_sync::hubspot::HubSpotClient;
use std::collections::BTreeMap;
use url::Url;

/// Follows `client`'s install link (carrying `state`) like a browser that approves, checks that
/// the sandbox redirects back with that `state`, and returns the code it hands back.
pub async fn approve(client: &HubSpotClient, state: &str) -> String {
    let link = client.authorize_url(state).expect("install link");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("browser");
    let answer = browser
        .get(link)
        .send()
        .await
        .expect("authorize page answers");
    assert!(
        answer.status().is_redirection(),
        "authorize approves: {}",
        answer.status()
    );
    let location = answer.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let back = Url::parse(&location).expect("redirect url");
    let query: BTreeMap<String, String> = back.query_pairs().into_owned().collect();
    assert_eq!(query.get("state").map(String::as_str), Some(state));
    query["code"].clone()
}
