//! The dashboard's forms in a real headless Chromium against the real binary. The operator, signed in
//! through the page, makes an egress IP of every kind through its form (WireGuard and the six proxy
//! types): bad input first shows the API's message under the field it names and writes nothing, then
//! the fixed form creates the record the API shows, and the secrets typed in are never shown back.
//! With Docker and the host image: a host made through the form for a user (a limit out of range is
//! refused first) starts with live progress on its page, and is stopped and started from there; and
//! the sign-in, overview, hosts list and host pages work on a phone-sized screen.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::time::Duration;

use cloud_cli_proxy_tests::browser::{self, Browser, NARROW_WINDOW};
use cloud_cli_proxy_tests::fixtures::{random_alnum, unique, wg_key};
use cloud_cli_proxy_tests::hosts::{ACTION_LIMIT, CREATE_LIMIT};
use cloud_cli_proxy_tests::{Api, ControlPlane, Node, Options, eventually};
use serde_json::{Value, json};

/// Signs in through the form as the operator and waits for the overview.
async fn sign_in(browser: &Browser, base: &str, opts: &Options) {
    browser.goto(&format!("{base}/")).await;
    browser.sign_in(&opts.admin_username, &opts.admin_password).await;
    browser.wait_for_text("[data-test=page-title]", "Overview").await;
}

/// Picks the option `value` of the `<select>` matching `css`, as a click would.
async fn choose(browser: &Browser, css: &str, value: &str) {
    browser.click(&format!("{css} option[value='{value}']")).await;
}

/// Fails the test when the current document reported a CSP violation or a script error, or shows
/// a value that was never filled in (`null`, `undefined`, `NaN`, `[object Object]` as a text).
async fn assert_clean(browser: &Browser, at: &str) {
    let violations = browser.violations().await;
    assert!(violations.is_empty(), "CSP violations at {at}: {violations:?}");
    let errors = browser.js_errors().await;
    assert!(errors.is_empty(), "JS errors at {at}: {errors:?}");
    let junk = browser
        .exec_js(
            "const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);\
             const bad = new Set(['null', 'undefined', 'NaN', '[object Object]']);\
             const found = [];\
             const name = (e) => e ? `${e.tagName.toLowerCase()}[data-test=${e.dataset.test || ''}].${e.className}` : '-';\
             while (walk.nextNode()) {\
               const n = walk.currentNode;\
               if (bad.has(n.textContent.trim())) found.push(\
                 `${JSON.stringify(n.textContent)} in ${name(n.parentElement)} after ${name(n.previousElementSibling)}`);\
             }\
             return found;",
            vec![],
        )
        .await;
    assert_eq!(junk, json!([]), "unfilled values shown at {at}");
}

/// Waits for the API's message under the input named `field` and returns it; checks the message is
/// shown beside that input (same field box) and the input is marked invalid.
async fn field_error(browser: &Browser, field: &str) -> String {
    let css = format!("[data-test='field-error-{field}']");
    let el = browser.wait_for(&css).await;
    eventually(
        Duration::from_secs(15),
        &format!("the error under {field}"),
        || async {
            let text = el.text().await.unwrap();
            (!text.is_empty()).then_some(())
        },
    )
    .await;
    let beside = browser
        .exec_js(
            "const [name, css] = arguments;\
             const err = document.querySelector(css);\
             const input = [...document.querySelectorAll('[name]')].find((e) => e.getAttribute('name') === name);\
             return Boolean(input && !err.hidden && err.closest('.field') === input.closest('.field')\
               && input.getAttribute('aria-invalid') === 'true');",
            vec![json!(field), json!(css)],
        )
        .await;
    assert_eq!(
        beside.as_bool(),
        Some(true),
        "the error of {field} is not shown beside its input"
    );
    el.text().await.unwrap()
}

/// The egress IP form with its secrets: what each kind's part of the test needs.
struct EgressForms<'a> {
    browser: &'a Browser,
    admin: &'a Api,
    cp: &'a ControlPlane,
    base: String,
    /// Egress IPs made so far: the list's total must stay at this after a refused form.
    made: i64,
}

impl EgressForms<'_> {
    /// Opens an empty form and types the label and declared exit address.
    async fn open(&self, label: &str, ip: &str) {
        self.browser.goto(&format!("{}/#/egress/new", self.base)).await;
        self.browser
            .wait_for_text("[data-test=page-title]", "New egress IP")
            .await;
        self.browser.fill("[data-test=egress-label]", label).await;
        self.browser.fill("[data-test=egress-ip_address]", ip).await;
    }

    /// Switches the form to a proxy of `kind` and types its server.
    async fn proxy(&self, kind: &str, server: &str, port: &str) {
        self.browser.click("[data-test=tunnel-proxy]").await;
        choose(self.browser, "[data-test=proxy-type]", kind).await;
        self.browser.fill("[data-test=proxy-server]", server).await;
        self.browser.fill("[data-test=proxy-server_port]", port).await;
    }

    /// Submits the form as it is: the API's `message` appears under `field`, nothing is written.
    async fn refused(&self, field: &str, message: &str) {
        self.browser.click("[data-test=egress-submit]").await;
        let shown = field_error(self.browser, field).await;
        assert_eq!(shown, message, "the error under {field}");
        self.browser.shot(&format!("refused-{}-{field}", self.made)).await;
        assert_clean(self.browser, &format!("the refused form ({field})")).await;
        let list = self.admin.get("/v1/admin/egress-ips").await;
        assert_eq!(list.total(), self.made, "a refused form wrote nothing");
    }

    /// Submits the form, waits for the new egress IP's page and returns the API's view of it.
    async fn created(&mut self, label: &str) -> Value {
        self.browser.click("[data-test=egress-submit]").await;
        self.browser.wait_for_text("[data-test=page-title]", label).await;
        self.browser.wait_for("[data-test=egress-test]").await;
        let url = self.browser.url().await;
        let id = url
            .rsplit_once("#/egress/")
            .map(|(_, id)| id.to_owned())
            .unwrap_or_else(|| panic!("not an egress page: {url}"));
        self.made += 1;
        let list = self.admin.get("/v1/admin/egress-ips").await;
        assert_eq!(list.total(), self.made);
        let view = self.admin.get(&format!("/v1/admin/egress-ips/{id}")).await;
        view.expect(200).clone()
    }

    /// The secrets are nowhere in the page's text or its inputs, on the page the form led to and on
    /// the same page loaded afresh; the form shows one `********` for each of them instead.
    async fn secrets_hidden(&self, what: &str, secrets: &[&str]) {
        for pass in ["after the form", "reloaded"] {
            if pass == "reloaded" {
                assert_clean(self.browser, what).await;
                self.browser.client().refresh().await.unwrap();
            }
            // The form of the stored record is painted once its settings are read.
            self.browser
                .wait_for("[data-test=egress-form] input[name=label]")
                .await;
            let seen = self
                .browser
                .exec_js(
                    "const secrets = arguments[0];\
                     const values = [...document.querySelectorAll('input, textarea, select')].map((e) => e.value);\
                     const texts = [document.body.innerText, document.documentElement.outerHTML, ...values];\
                     return [secrets.filter((s) => texts.some((t) => t.includes(s))),\
                       values.filter((v) => v.includes('********')).length];",
                    vec![json!(secrets)],
                )
                .await;
            assert_eq!(seen[0], json!([]), "{what} ({pass}): secrets shown in the page");
            assert_eq!(
                seen[1].as_u64(),
                Some(secrets.len() as u64),
                "{what} ({pass}): a masked input for each secret"
            );
        }
        self.browser.shot(&format!("{what}-page")).await;
    }

    /// A column of the stored row, read from the database; secret columns are stored sealed and
    /// opened here with the control plane's key file.
    async fn stored(&self, id: &str, column: &str) -> Option<String> {
        let pool = sqlx::SqlitePool::connect(&format!("{}?mode=ro", self.cp.database_url()))
            .await
            .unwrap();
        let row: (Option<String>,) = sqlx::query_as(&format!("SELECT {column} FROM egress_ips WHERE id = ?"))
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        let sealed = ["wg_preshared_key", "wg_private_key", "proxy_config"].contains(&column);
        row.0.map(|raw| {
            if !sealed {
                return raw;
            }
            let key_file = self.cp.db_path().parent().unwrap().join("secrets.key");
            let key = control_plane::secrets::keyfile::load(&key_file).unwrap();
            key.open(&format!("egress_ips.{column}"), &raw)
                .unwrap_or_else(|e| panic!("{column} is not sealed under the key file's key: {e}"))
        })
    }

    async fn stored_proxy(&self, id: &str) -> Value {
        let raw = self.stored(id, "proxy_config").await.expect("a proxy_config");
        serde_json::from_str(&raw).unwrap()
    }
}

fn id_of(v: &Value) -> &str {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_creates_an_egress_ip_of_every_kind_through_the_form() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    sign_in(&browser, &cp.base_url(), cp.options()).await;
    let mut f = EgressForms {
        browser: &browser,
        admin: &admin,
        cp: &cp,
        base: cp.base_url(),
        made: 0,
    };

    // WireGuard: a server key that is not one is refused by name; the preshared key is a secret.
    let label = unique("wg");
    let (peer_key, psk) = (wg_key(), wg_key());
    f.open(&label, "198.18.0.11").await;
    browser
        .fill("[data-test=egress-wg_endpoint]", "198.18.1.11:51820")
        .await;
    browser
        .fill("[data-test=egress-wg_public_key]", "not-a-key")
        .await;
    browser
        .fill("[data-test=egress-wg_peer_address]", "10.64.0.2/32")
        .await;
    browser.fill("[data-test=egress-wg_preshared_key]", &psk).await;
    browser
        .fill("[data-test=egress-wg_dns_server]", "10.64.0.1")
        .await;
    f.refused(
        "wg_public_key",
        "must be a WireGuard key: base64 of 32 bytes (44 characters ending in '='), as wg prints it",
    )
    .await;
    browser.fill("[data-test=egress-wg_public_key]", &peer_key).await;
    let wg = f.created(&label).await;
    assert_eq!(wg["tunnel_type"], "wireguard");
    assert_eq!(wg["ip_address"], "198.18.0.11");
    assert_eq!(wg["wg_endpoint"], "198.18.1.11:51820");
    assert_eq!(wg["wg_public_key"], peer_key.as_str());
    assert_eq!(wg["wg_peer_address"], "10.64.0.2/32");
    assert_eq!(wg["wg_allowed_ips"], "0.0.0.0/0, ::/0");
    assert_eq!(wg["wg_dns_server"], "10.64.0.1");
    assert_eq!(wg["wg_preshared_key"], "********");
    assert!(wg["proxy_config"].is_null(), "{wg}");
    assert!(wg["wg_client_public_key"].is_string(), "{wg}");
    assert_eq!(
        f.stored(id_of(&wg), "wg_preshared_key").await.as_deref(),
        Some(psk.as_str()),
        "the preshared key typed in is the one stored"
    );
    f.secrets_hidden("wireguard", &[&psk]).await;

    // SOCKS: a password without a username.
    let label = unique("socks");
    let password = format!("socks-{}", random_alnum(16));
    f.open(&label, "198.18.0.12").await;
    f.proxy("socks", "198.18.1.12", "1080").await;
    browser.fill("[data-test='proxy-password']", &password).await;
    f.refused("proxy_config.username", "is required with a password")
        .await;
    browser.fill("[data-test='proxy-username']", "ops").await;
    let socks = f.created(&label).await;
    assert_eq!(socks["tunnel_type"], "proxy");
    assert_eq!(
        socks["proxy_config"],
        json!({"type": "socks", "server": "198.18.1.12", "server_port": 1080,
               "username": "ops", "password": "********"})
    );
    assert_eq!(f.stored_proxy(id_of(&socks)).await["password"], password.as_str());
    f.secrets_hidden("socks", &[&password]).await;

    // HTTP: a username with a colon; the password and a credential header are secrets.
    let label = unique("http");
    let password = format!("http-{}", random_alnum(16));
    let auth = format!("Basic {}", random_alnum(24));
    f.open(&label, "198.18.0.13").await;
    f.proxy("http", "198.18.1.13", "3128").await;
    browser.fill("[data-test='proxy-username']", "ops:x").await;
    browser.fill("[data-test='proxy-password']", &password).await;
    browser
        .fill(
            "[data-test='proxy-headers']",
            &format!("Proxy-Authorization: {auth}\nX-Client: ccp"),
        )
        .await;
    f.refused("proxy_config.username", "must be non-empty and contain no colon")
        .await;
    browser.fill("[data-test='proxy-username']", "ops").await;
    let http = f.created(&label).await;
    assert_eq!(
        http["proxy_config"],
        json!({"type": "http", "server": "198.18.1.13", "server_port": 3128, "username": "ops",
               "password": "********",
               "headers": {"Proxy-Authorization": "********", "X-Client": ["ccp"]}})
    );
    let stored = f.stored_proxy(id_of(&http)).await;
    assert_eq!(stored["password"], password.as_str());
    assert_eq!(stored["headers"]["Proxy-Authorization"], json!([auth]));
    f.secrets_hidden("http", &[&password, &auth]).await;

    // Shadowsocks: a 2022 method takes a base64 key of its length, not any password.
    let label = unique("ss");
    let key = "8JCsPssfgS8tiRwiMlhARg==";
    f.open(&label, "198.18.0.14").await;
    f.proxy("shadowsocks", "198.18.1.14", "8388").await;
    choose(&browser, "[data-test='proxy-method']", "2022-blake3-aes-128-gcm").await;
    browser
        .fill("[data-test='proxy-password']", "short-password")
        .await;
    f.refused(
        "proxy_config.password",
        "this method needs a base64 key of 16 bytes, or several joined by ':' \
         (`sing-box generate rand --base64 16` makes one)",
    )
    .await;
    browser.fill("[data-test='proxy-password']", key).await;
    let ss = f.created(&label).await;
    assert_eq!(
        ss["proxy_config"],
        json!({"type": "shadowsocks", "server": "198.18.1.14", "server_port": 8388,
               "method": "2022-blake3-aes-128-gcm", "password": "********"})
    );
    assert_eq!(f.stored_proxy(id_of(&ss)).await["password"], key);
    f.secrets_hidden("shadowsocks", &[key]).await;

    // VMess over TLS and WebSocket: an id that is not a UUID; the header's token is a secret too.
    let label = unique("vmess");
    let uuid = uuid::Uuid::new_v4().to_string();
    let bearer = format!("Bearer {}", random_alnum(24));
    f.open(&label, "198.18.0.15").await;
    f.proxy("vmess", "198.18.1.15", "443").await;
    browser.fill("[data-test='proxy-uuid']", "not-a-uuid").await;
    browser.click("[data-test='proxy-tls.enabled']").await;
    browser
        .fill("[data-test='proxy-tls.server_name']", "vmess.example.test")
        .await;
    choose(&browser, "[data-test=proxy-transport-type]", "ws").await;
    browser.fill("[data-test='proxy-transport.path']", "/ray").await;
    browser
        .fill(
            "[data-test='proxy-transport.headers']",
            &format!("Authorization: {bearer}"),
        )
        .await;
    f.refused(
        "proxy_config.uuid",
        "must be a UUID such as bf000d23-0752-40b4-affe-68f7707a9661",
    )
    .await;
    browser.fill("[data-test='proxy-uuid']", &uuid).await;
    let vmess = f.created(&label).await;
    assert_eq!(
        vmess["proxy_config"],
        json!({"type": "vmess", "server": "198.18.1.15", "server_port": 443, "uuid": "********",
               "tls": {"enabled": true, "server_name": "vmess.example.test"},
               "transport": {"type": "ws", "path": "/ray", "headers": {"Authorization": "********"}}})
    );
    let stored = f.stored_proxy(id_of(&vmess)).await;
    assert_eq!(stored["uuid"], uuid.as_str());
    assert_eq!(stored["transport"]["headers"]["Authorization"], json!([bearer]));
    f.secrets_hidden("vmess", &[&uuid, &bearer]).await;

    // VLESS with the Vision flow, which needs TLS: refused until TLS is on.
    let label = unique("vless");
    let uuid = uuid::Uuid::new_v4().to_string();
    f.open(&label, "198.18.0.16").await;
    f.proxy("vless", "198.18.1.16", "443").await;
    browser.fill("[data-test='proxy-uuid']", &uuid).await;
    choose(&browser, "[data-test='proxy-flow']", "xtls-rprx-vision").await;
    f.refused(
        "proxy_config.tls.enabled",
        "must be true with flow xtls-rprx-vision",
    )
    .await;
    browser.click("[data-test='proxy-tls.enabled']").await;
    browser
        .fill("[data-test='proxy-tls.server_name']", "vless.example.test")
        .await;
    let vless = f.created(&label).await;
    assert_eq!(
        vless["proxy_config"],
        json!({"type": "vless", "server": "198.18.1.16", "server_port": 443, "uuid": "********",
               "flow": "xtls-rprx-vision",
               "tls": {"enabled": true, "server_name": "vless.example.test"}})
    );
    assert_eq!(f.stored_proxy(id_of(&vless)).await["uuid"], uuid.as_str());
    f.secrets_hidden("vless", &[&uuid]).await;

    // Trojan: a port past 65535.
    let label = unique("trojan");
    let password = format!("trojan-{}", random_alnum(16));
    f.open(&label, "198.18.0.17").await;
    f.proxy("trojan", "198.18.1.17", "70000").await;
    browser.fill("[data-test='proxy-password']", &password).await;
    browser.click("[data-test='proxy-tls.enabled']").await;
    browser
        .fill("[data-test='proxy-tls.server_name']", "trojan.example.test")
        .await;
    f.refused("proxy_config.server_port", "must be an integer from 1 to 65535")
        .await;
    browser.fill("[data-test=proxy-server_port]", "443").await;
    let trojan = f.created(&label).await;
    assert_eq!(
        trojan["proxy_config"],
        json!({"type": "trojan", "server": "198.18.1.17", "server_port": 443,
               "password": "********",
               "tls": {"enabled": true, "server_name": "trojan.example.test"}})
    );
    assert_eq!(
        f.stored_proxy(id_of(&trojan)).await["password"],
        password.as_str()
    );
    f.secrets_hidden("trojan", &[&password]).await;

    // The list shows all seven, none of them bound or running anything.
    browser.goto(&format!("{}/#/egress", cp.base_url())).await;
    let rows = eventually(Duration::from_secs(15), "the seven egress rows", || async {
        let n = browser
            .exec_js(
                "return document.querySelectorAll('[data-test=egress-row]').length",
                vec![],
            )
            .await;
        (n.as_u64() == Some(7)).then_some(7)
    })
    .await;
    assert_eq!(rows, 7);
    assert_tables_fit(&browser, "the egress list").await;
    browser.shot("egress-list").await;
    let all = admin.get("/v1/admin/egress-ips").await;
    assert!(
        all.data().iter().all(|e| e["bound_hosts"] == 0),
        "{:?}",
        all.data()
    );
    assert_clean(&browser, "the egress list").await;
}

/// Records in the page every state a task progress bar shows, as `[task id, status, percent,
/// text]`, into `window.__progress`: the bars are repainted by the task's SSE stream, and a
/// MutationObserver sees every repaint, however quick.
const RECORD_PROGRESS: &str = "
  if (window.__progress) return;
  const seen = [];
  window.__progress = seen;
  const record = () => {
    for (const el of document.querySelectorAll('[data-test=task-progress]')) {
      const bar = el.querySelector('[role=progressbar]');
      const text = el.querySelector('.progress-text');
      const state = [el.dataset.taskId, el.dataset.status, bar.getAttribute('aria-valuenow'),
        text ? text.textContent : ''];
      const last = seen.filter((s) => s[0] === state[0]).pop();
      if (!last || last.join('|') !== state.join('|')) seen.push(state);
    }
  };
  new MutationObserver(record).observe(document.body,
    { subtree: true, childList: true, attributes: true, characterData: true });
  record();";

/// The progress states recorded for `task`, as `(status, percent, text)`.
async fn progress_of(browser: &Browser, task: &str) -> Vec<(String, u64, String)> {
    let all = browser.exec_js("return window.__progress", vec![]).await;
    all.as_array()
        .expect("the progress recorder runs")
        .iter()
        .filter(|s| s[0] == task)
        .map(|s| {
            (
                s[1].as_str().unwrap().to_owned(),
                s[2].as_str().unwrap().parse().unwrap(),
                s[3].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Waits until the newest progress bar (for a task other than `before`) ends in success; returns
/// its task id and the states it showed.
async fn follow_progress(
    browser: &mut Browser,
    before: &[&str],
    limit: Duration,
) -> (String, Vec<(String, u64, String)>) {
    browser.set_wait(Duration::from_secs(15));
    let task = eventually(Duration::from_secs(15), "a new progress bar", || async {
        let id = browser
            .exec_js(
                "const el = document.querySelector('[data-test=task-progress]');\
                 return el ? el.dataset.taskId : null;",
                vec![],
            )
            .await;
        id.as_str().filter(|id| !before.contains(id)).map(str::to_owned)
    })
    .await;
    browser.set_wait(limit);
    let done = browser
        .wait_for(&format!(
            "[data-test=task-progress][data-task-id='{task}']:is([data-status=succeeded], [data-status=failed])"
        ))
        .await;
    browser.set_wait(browser::WAIT);
    let status = done.attr("data-status").await.unwrap();
    let states = progress_of(browser, &task).await;
    assert_eq!(status.as_deref(), Some("succeeded"), "task {task}: {states:?}");
    // The bar followed the task's event stream (not the polling fallback).
    eventually(
        Duration::from_secs(15),
        "the task's event stream in the page's requests",
        || async {
            let used = browser
                .exec_js(
                    "return performance.getEntriesByType('resource').map((e) => e.name)\
                   .some((url) => url.endsWith(`/v1/admin/tasks/${arguments[0]}/events`));",
                    vec![json!(task)],
                )
                .await;
            used.as_bool().unwrap_or(false).then_some(())
        },
    )
    .await;
    (task, states)
}

/// At least one state strictly between queued and done, and the bar ends at 100 %.
fn assert_live(what: &str, states: &[(String, u64, String)]) {
    assert!(
        states
            .iter()
            .any(|(status, pct, text)| status == "running" && (1..100).contains(pct) && text.contains(" · ")),
        "{what}: no intermediate progress shown: {states:?}"
    );
    let last = states.last().expect("some progress");
    assert_eq!(
        (last.0.as_str(), last.1),
        ("succeeded", 100),
        "{what}: {states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_creates_a_host_and_watches_it_start_stop_and_start() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let node = Node::embedded(&[]).await;
    let base = node.cp.base_url();
    let username = unique("forms");
    let user = node.user(&username).await;
    sign_in(&browser, &base, node.cp.options()).await;

    browser.click("[data-test=nav-hosts]").await;
    browser.wait_for_text("[data-test=page-title]", "Hosts").await;
    browser.click("[data-test=new-host]").await;
    browser.fill("[data-test=create-host-user]", &username).await;
    browser
        .wait_for_text("[data-test=create-host-user-option]", &username)
        .await;
    browser.click("[data-test=create-host-user-option]").await;
    browser.fill("[data-test=create-host-name]", "forms-dev").await;
    browser.fill("[data-test=create-host-memory]", "64").await;
    browser.click("[data-test=create-host-submit]").await;
    assert_eq!(
        field_error(&browser, "memory_mb").await,
        "memory_mb must be 256 to 65536"
    );
    browser.shot("host-form-refused").await;
    assert_eq!(
        node.admin.get("/v1/admin/hosts").await.total(),
        0,
        "nothing written"
    );

    browser.fill("[data-test=create-host-memory]", "1024").await;
    browser.exec_js(RECORD_PROGRESS, vec![]).await;
    browser.click("[data-test=create-host-submit]").await;
    let (create, states) = follow_progress(&mut browser, &[], CREATE_LIMIT).await;
    assert_live("create", &states);
    browser
        .wait_for("[data-test=host-status-detail][data-status=running]")
        .await;
    browser.shot("host-running").await;
    let url = browser.url().await;
    let host_id = url.rsplit_once("#/hosts/").unwrap().1.to_owned();
    let host = node.host(&host_id).await;
    assert_eq!(host["status"], "running", "{host}");
    assert_eq!(host["user_id"], user.as_str());
    assert_eq!(host["name"], "forms-dev");
    assert_eq!(host["memory_mb"], 1024);
    assert_eq!(node.task(&create).await["kind"], "create");

    browser.click("[data-test=host-stop]").await;
    let (stop, states) = follow_progress(&mut browser, &[&create], ACTION_LIMIT).await;
    // Stopping takes a fraction of a second, so the steps between may come and go before the
    // stream is open; the bar still shows the task through to its end.
    let last = states.last().unwrap();
    assert_eq!((last.0.as_str(), last.1), ("succeeded", 100), "stop: {states:?}");
    browser
        .wait_for("[data-test=host-status-detail][data-status=stopped]")
        .await;
    browser.shot("host-stopped").await;
    assert_eq!(node.host(&host_id).await["status"], "stopped");

    browser.click("[data-test=host-start]").await;
    let (start, states) = follow_progress(&mut browser, &[&create, &stop], ACTION_LIMIT).await;
    assert_live("start", &states);
    browser
        .wait_for("[data-test=host-status-detail][data-status=running]")
        .await;
    browser.shot("host-started").await;
    assert_eq!(node.host(&host_id).await["status"], "running");
    assert_eq!(node.task(&start).await["kind"], "start");
    assert_clean(&browser, "the host page").await;

    browser.click("[data-test=nav-hosts]").await;
    browser
        .wait_for(&format!(
            "[data-test=host-row][data-host-id='{host_id}'][data-status=running]"
        ))
        .await;
    assert_tables_fit(&browser, "the hosts list").await;
    browser.shot("hosts").await;
    assert_clean(&browser, "the hosts list").await;
}

/// Fails when a table is wider than its box: a sideways scrollbar on a screen it should fit.
async fn assert_tables_fit(browser: &Browser, what: &str) {
    let wide = browser
        .exec_js(
            "return [...document.querySelectorAll('.table-wrap')]\
               .filter((w) => w.scrollWidth > w.clientWidth)\
               .map((w) => `${w.scrollWidth} px in ${w.clientWidth} px`);",
            vec![],
        )
        .await;
    assert_eq!(wide, json!([]), "{what}: tables wider than their box");
}

/// Fails unless the page is no wider than the window.
async fn assert_fits(browser: &Browser, what: &str) {
    let sizes = browser
        .exec_js(
            "return [document.documentElement.scrollWidth, window.innerWidth]",
            vec![],
        )
        .await;
    let (scroll, inner) = (sizes[0].as_u64().unwrap(), sizes[1].as_u64().unwrap());
    assert!(
        scroll <= inner,
        "{what}: the page is {scroll} px wide in a {inner} px window"
    );
}

/// Opens the menu with its toggle, checks the sidebar is on screen, and follows its link `nav`.
async fn through_menu(browser: &Browser, nav: &str, title: &str) {
    browser.click("[data-test=nav-toggle]").await;
    eventually(Duration::from_secs(15), "the sidebar to slide in", || async {
        let v = browser
            .exec_js(
                "const r = document.querySelector('[data-test=sidebar]').getBoundingClientRect();\
                 const t = document.querySelector('[data-test=nav-toggle]');\
                 return r.left >= 0 && r.right <= window.innerWidth && r.width > 100\
                   && t.getAttribute('aria-expanded') === 'true';",
                vec![],
            )
            .await;
        v.as_bool().unwrap_or(false).then_some(())
    })
    .await;
    browser.shot(&format!("menu-to-{nav}")).await;
    browser.click(&format!("[data-test=nav-{nav}]")).await;
    browser.wait_for_text("[data-test=page-title]", title).await;
    eventually(Duration::from_secs(15), "the sidebar to close", || async {
        let v = browser
            .exec_js(
                "const r = document.querySelector('[data-test=sidebar]').getBoundingClientRect();\
                 return r.right <= 0 || r.left >= window.innerWidth;",
                vec![],
            )
            .await;
        v.as_bool().unwrap_or(false).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_work_on_a_narrow_screen() {
    let Some(mut browser) = Browser::start_with(NARROW_WINDOW).await else {
        return;
    };
    let node = Node::embedded(&[]).await;
    let base = node.cp.base_url();
    let user = node.user(&unique("narrow")).await;
    let host = node.create_host(&user).await;
    node.task_succeeded(&host.task_id, CREATE_LIMIT, "create").await;

    browser.goto(&format!("{base}/")).await;
    browser.wait_for("[data-test=login-form]").await;
    assert_fits(&browser, "sign-in").await;
    browser.shot("sign-in").await;
    let opts = node.cp.options();
    browser.sign_in(&opts.admin_username, &opts.admin_password).await;
    browser.wait_for_text("[data-test=page-title]", "Overview").await;
    // The overview's cards are painted once their data is in.
    browser.wait_for("[data-test=hosts-count-running]").await;
    browser.wait_for("[data-test=node-row]").await;
    assert_fits(&browser, "overview").await;
    browser.shot("overview").await;

    through_menu(&browser, "hosts", "Hosts").await;
    browser
        .wait_for(&format!("[data-test=host-row][data-host-id='{}']", host.id))
        .await;
    assert_fits(&browser, "hosts list").await;
    browser.shot("hosts").await;

    browser.click("[data-test=host-link]").await;
    browser
        .wait_for("[data-test=host-status-detail][data-status=running]")
        .await;
    browser.wait_for("[data-test=task-row]").await;
    assert_fits(&browser, "host page").await;
    browser.shot("host").await;
    // The actions are on screen and work: stop it from the phone.
    browser.click("[data-test=host-stop]").await;
    browser.set_wait(ACTION_LIMIT);
    browser
        .wait_for("[data-test=task-progress][data-status=succeeded]")
        .await;
    browser.set_wait(browser::WAIT);
    browser
        .wait_for("[data-test=host-status-detail][data-status=stopped]")
        .await;
    assert_fits(&browser, "host page with progress").await;
    browser.shot("host-stopped").await;
    assert_eq!(node.host(&host.id).await["status"], "stopped");
    assert_clean(&browser, "the host page").await;
}
