//! The dashboard's enrolment keys in headless Chromium, against the real binary: the operator makes
//! a key on the Nodes & gateways page (its secret shown once), a node enrols with it, and the
//! operator revokes the node and the key from the page; the API agrees at each step.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::time::Duration;

use cloud_cli_proxy_tests::browser::Browser;
use cloud_cli_proxy_tests::{ControlPlane, Options, enrolment, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_makes_a_key_and_revokes_node_and_key_from_the_page() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let base = cp.base_url();
    let opts = cp.options();
    browser.goto(&format!("{base}/")).await;
    browser.sign_in(&opts.admin_username, &opts.admin_password).await;
    browser.wait_for_text("[data-test=page-title]", "Overview").await;
    browser.goto(&format!("{base}/#/infra")).await;
    browser.wait_for("[data-test=enrolment-keys-card]").await;

    browser.click("[data-test=new-enrolment-key]").await;
    browser
        .fill("[data-test=enrolment-key-name]", "node-from-page")
        .await;
    browser.click("[data-test=enrolment-key-submit]").await;
    let secret = browser
        .wait_for_text("[data-test=new-enrolment-key-value]", "ccpk_")
        .await;
    let secret = secret.trim().to_owned();
    browser
        .wait_for("[data-test=enrolment-key-row][data-state=active]")
        .await;

    // The secret on the page enrols a node, once.
    let r = enrolment::enrol(&cp.api(), "agent", &secret, "node-from-page").await;
    let node_id = r.expect(201)["id"].as_str().unwrap().to_owned();
    let again = enrolment::enrol(&cp.api(), "agent", &secret, "node-other").await;
    assert_eq!(again.status, 401, "{}", again.text);

    // The node shows up (the page refreshes every 10 s); revoke it from there.
    let row = format!("[data-test=node-row][data-id='{node_id}'] [data-test=node-revoke]");
    browser.set_wait(Duration::from_secs(20));
    browser.wait_for(&row).await;
    browser.click(&row).await;
    browser.click("[data-test=confirm-ok]").await;
    eventually(Duration::from_secs(10), "the node to be revoked", || async {
        let nodes = admin.get("/v1/admin/nodes").await;
        let body = nodes.expect(200).clone();
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == node_id.as_str() && n["revoked_at"].is_string())
            .then_some(())
    })
    .await;

    // And the key: revoked, it is listed so.
    browser.goto(&format!("{base}/#/infra")).await;
    browser.wait_for("[data-test=enrolment-key-revoke]").await;
    browser.click("[data-test=enrolment-key-revoke]").await;
    browser.click("[data-test=confirm-ok]").await;
    browser
        .wait_for("[data-test=enrolment-key-row][data-state=revoked]")
        .await;
    let keys = admin.get("/v1/admin/enrolment-keys").await;
    assert_eq!(keys.expect(200)["data"][0]["revoked"], json!(true));
    assert!(
        browser.js_errors().await.is_empty(),
        "{:?}",
        browser.js_errors().await
    );
}
