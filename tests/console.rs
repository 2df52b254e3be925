//! The console (`/ui` on the admin listener, issue 18): its protections over HTTP, and the
//! whole of it driven in headless Chromium (tests/console/browser.py, Selenium with Debian's
//! `chromium` and `chromium-driver`; `.ci/run` installs them). Screenshots of every page go to
//! `target/console-screenshots/`.
//!
//! The browser test never skips under `CI=true`: a missing browser fails it with the command
//! that installs one. Outside CI it says loudly that it did not run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use entitygate::sandbox::Sandbox;
use entitygate::{Config, Gateway, RunningGateway};
use serde_json::json;
#[path = "console/http.rs"]
mod http_raw;
use http_raw::*;

const API_KEY: &str = "sk_test_REAL_COMPOSIO_KEY_0123456789abcdef";
const SECRET: &str = "test-only-hs256-secret-0123456789abcdef0123456789";
const ADMIN_TOKEN: &str = "console-admin-token-0123456789";
/// A named operator's token (`[[admin.operators]]`): the one who approves.
const OPERATOR_TOKEN: &str = "console-operator-dana-0123456789";
/// Markup an agent puts in a call's arguments, which the Approvals page shows.
const EVIL_ARGUMENT: &str = "<img src=x onerror=\"window.__pwned=1;document.title='pwned'\">";
const ISSUER: &str = "https://idp.test/";
const AUDIENCE: &str = "entitygate";

/// Markup an attacker puts where the console shows it (subjects, tool slugs, queries).
const EVIL_SUBJECT: &str =
    "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">";
const EVIL_TOOL: &str = "<img src=x onerror=\"document.title='pwned'\">";

struct World {
    _sandbox: Sandbox,
    gateway: RunningGateway,
    admin: SocketAddr,
    dir: PathBuf,
}

async fn start(admin_extra: &str) -> World {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    let upstream = sandbox.start().await.expect("sandbox starts");
    let dir = std::env::temp_dir().join(format!(
        "entitygate-console-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let toml = format!(
        r#"
listen = "127.0.0.1:0"
[upstream]
base_url = "http://{upstream}"
api_key_env = "COMPOSIO_API_KEY"
[auth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
leeway_secs = 5
[[auth.keys]]
alg = "HS256"
secret_env = "JWT_SECRET"
[[policy.rules]]
name = "no-notion"
deny_toolkits = ["notion"]
[[policy.approvals]]
name = "slack messages"
tools = ["SLACK_SEND_MESSAGE"]
message = "Slack messages need approval."
[audit]
path = {audit:?}
[admin]
listen = "127.0.0.1:0"
{admin_extra}
{operators}
"#,
        // Without any token (the admin token or an operator's) there is no console.
        operators = if admin_extra.is_empty() {
            ""
        } else {
            "[[admin.operators]]\nname = \"dana\"\ntoken_env = \"OPERATOR_TOKEN\"\n"
        },
        audit = dir.join("audit.jsonl").display().to_string()
    );
    let path = dir.join("entitygate.toml");
    std::fs::write(&path, &toml).expect("config written");
    let env: HashMap<String, String> = [
        ("COMPOSIO_API_KEY".to_owned(), API_KEY.to_owned()),
        ("JWT_SECRET".to_owned(), SECRET.to_owned()),
        ("ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
        ("OPERATOR_TOKEN".to_owned(), OPERATOR_TOKEN.to_owned()),
    ]
    .into();
    let config = Config::from_toml(&toml).expect("config parses");
    let gateway = Gateway::builder(config)
        .env(env)
        .config_path(&path)
        .build()
        .await
        .expect("gateway builds")
        .spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("binds");
    let admin = gateway.admin_addr().expect("admin listener");
    World {
        _sandbox: sandbox,
        gateway,
        admin,
        dir,
    }
}

fn token(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

#[tokio::test]
async fn without_an_admin_token_there_is_no_console() {
    // No admin token and no operator.
    let w = start("").await;
    for path in ["/ui/login", "/ui/live"] {
        let answer = raw(w.admin, &get(w.admin, path, None, None)).await;
        assert!(matches!(status(&answer), 403 | 404), "{answer}");
        assert!(!answer.contains("<form"), "{answer}");
    }
    let answer = raw(w.admin, &post(w.admin, "/ui/login", None, "token=")).await;
    assert!(header(&answer, "set-cookie").is_none(), "{answer}");
    w.gateway.shutdown().await;
}

#[tokio::test]
async fn the_console_needs_the_token_a_session_and_the_csrf_token() {
    let w = start("token_env = \"ADMIN_TOKEN\"").await;
    let a = w.admin;
    // Without a session: pages send to the login page, the feed and forms are refused.
    let answer = raw(a, &get(a, "/ui/live", None, None)).await;
    assert_eq!(status(&answer), 303);
    assert_eq!(header(&answer, "location"), Some("/ui/login"));
    assert_eq!(
        status(&raw(a, &get(a, "/ui/live/events", None, None)).await),
        401
    );
    assert_eq!(
        status(&raw(a, &get(a, "/ui/live", Some("forged-session-id"), None)).await),
        303
    );
    // A wrong token opens nothing.
    let answer = raw(a, &post(a, "/ui/login", None, "token=not-the-token")).await;
    assert_eq!(status(&answer), 401);
    assert!(header(&answer, "set-cookie").is_none());
    // Every answer carries the strict CSP.
    let csp = header(&answer, "content-security-policy").expect("a CSP");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));

    let (session, csrf) = sign_in(a, ADMIN_TOKEN).await;
    assert_eq!(
        status(&raw(a, &get(a, "/ui/live", Some(&session), None)).await),
        200
    );
    // A form without its CSRF token (or with another) is refused; with it, it runs.
    let explain = "request=GET+%2Fapi%2Fv3%2Ftoolkits&token=x";
    let answer = raw(a, &post(a, "/ui/policy/explain", Some(&session), explain)).await;
    assert_eq!(status(&answer), 403, "{answer}");
    // Another token: the real one with its first character changed (never equal to it).
    let first = if csrf.starts_with('0') { '1' } else { '0' };
    let forged = format!("{explain}&csrf={first}{}", &csrf[1..]);
    assert_eq!(
        status(&raw(a, &post(a, "/ui/policy/explain", Some(&session), &forged)).await),
        403
    );
    // The kill switch the same way: a forged form adds nothing.
    let deny_all = "kind=all&reason=forged";
    let answer = raw(a, &post(a, "/ui/killswitch/add", Some(&session), deny_all)).await;
    assert_eq!(status(&answer), 403, "{answer}");
    let rules = raw(
        a,
        &format!("GET /deny HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(rules.ends_with("{\"rules\":[]}"), "{rules}");
    let with = format!("{deny_all}&csrf={csrf}");
    let answer = raw(a, &post(a, "/ui/killswitch/add", Some(&session), &with)).await;
    assert_eq!(status(&answer), 303, "{answer}");
    let rules = raw(
        a,
        &format!("GET /deny HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(rules.contains("\"all\":true"), "{rules}");
    let good = format!("{explain}&csrf={csrf}");
    assert_eq!(
        status(&raw(a, &post(a, "/ui/policy/explain", Some(&session), &good)).await),
        200
    );
    // Signing out ends the session on the server, not only in the browser.
    let logout = format!("csrf={csrf}");
    assert_eq!(
        status(&raw(a, &post(a, "/ui/logout", Some(&session), &logout)).await),
        303
    );
    assert_eq!(
        status(&raw(a, &get(a, "/ui/live", Some(&session), None)).await),
        303
    );
    w.gateway.shutdown().await;
}

#[tokio::test]
async fn markup_from_requests_is_escaped_on_every_page() {
    let w = start("token_env = \"ADMIN_TOKEN\"").await;
    let a = w.admin;
    let proxy = w.gateway.local_addr();
    let evil = token(EVIL_SUBJECT);
    let body =
        json!({"arguments": {"tools": [{"tool_slug": EVIL_TOOL, "arguments": {}}]}}).to_string();
    let call = format!(
        "POST /api/v3.1/tools/execute/COMPOSIO_MULTI_EXECUTE_TOOL?q=%3Cscript%3E HTTP/1.1\r\nHost: {proxy}\r\nx-api-key: {evil}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = raw(proxy, &call).await;
    assert!(status(&answer) >= 400, "{answer}");
    let (session, _) = sign_in(a, ADMIN_TOKEN).await;
    let mut pages = vec!["/ui/live".to_owned(), "/ui/refusals".to_owned()];
    pages.push(format!(
        "/ui/user?subject={}",
        form_urlencoded::byte_serialize(EVIL_SUBJECT.as_bytes()).collect::<String>()
    ));
    // The decision reaches the feed within moments.
    let mut live = String::new();
    for _ in 0..50 {
        live = raw(a, &get(a, "/ui/live", Some(&session), None)).await;
        if live.contains("&lt;script&gt;") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        live.contains("&lt;script&gt;document.title="),
        "the subject is shown as text: {live}"
    );
    assert!(
        live.contains("&lt;img src=x onerror="),
        "the tool is shown as text"
    );
    for page in pages {
        let html = raw(a, &get(a, &page, Some(&session), None)).await;
        assert_eq!(status(&html), 200, "{page}");
        let body = html.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert!(!body.contains("<script>document"), "{page}: {body}");
        assert!(!body.contains("<img src=x"), "{page}: {body}");
        // The only script is the console's own file.
        assert_eq!(body.matches("<script").count(), 1, "{page}");
        assert!(
            body.contains("<script src=\"/ui/static/app.js\">"),
            "{page}"
        );
    }
    w.gateway.shutdown().await;
}

/// The Python interpreter that has Selenium (Debian's `python3-selenium` lives in the
/// system interpreter; a virtualenv or pyenv one may not see it).
fn python_with_selenium() -> Option<String> {
    ["/usr/bin/python3", "python3"].into_iter().find_map(|py| {
        std::process::Command::new(py)
            .args(["-c", "import selenium"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| py.to_owned())
    })
}

fn browser_parts() -> Result<(String, String, String), String> {
    let find = |names: &[&str]| {
        names
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .map(|p| p.display().to_string())
    };
    let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
    let driver = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    match (chromium, driver, python_with_selenium()) {
        (Some(c), Some(d), Some(p)) => Ok((c, d, p)),
        (c, d, p) => Err(format!(
            "the console's browser test needs Chromium, its driver and Selenium for Python \
             (found chromium: {}, chromedriver: {}, selenium: {}); install them with \
             `apt-get install -y chromium chromium-driver python3-selenium` (.ci/run does)",
            c.is_some(),
            d.is_some(),
            p.is_some()
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let (chromium, driver, python) = match browser_parts() {
        Ok(parts) => parts,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{why}"),
        Err(why) => {
            eprintln!("NOT RUN (outside CI): {why}");
            return;
        }
    };
    let w = start("token_env = \"ADMIN_TOKEN\"").await;
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser.py");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .env("CONSOLE_URL", format!("http://{}", w.admin))
        .env("PROXY_URL", format!("http://{}", w.gateway.local_addr()))
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env("EVIL_ARGUMENT", EVIL_ARGUMENT)
        .env("ALICE_TOKEN", token("alice"))
        .env("EVIL_TOKEN", token(EVIL_SUBJECT))
        .env("EVIL_SUBJECT", EVIL_SUBJECT)
        .env("EVIL_TOOL", EVIL_TOOL)
        .env("CHROMIUM", chromium)
        .env("CHROMEDRIVER", driver)
        .env("SHOTS", &shots)
        .env("WORKDIR", &w.dir)
        .kill_on_drop(true)
        .spawn()
        .expect("python starts");
    let status = tokio::time::timeout(Duration::from_secs(240), child.wait())
        .await
        .expect("the browser test finishes within 4 minutes")
        .expect("python ran");
    assert!(
        status.success(),
        "the browser scenario failed (see its output above)"
    );
    w.gateway.shutdown().await;
}

/// Every metric the Grafana dashboard (deploy/grafana) queries exists in `/metrics`, and
/// every label it groups or filters by is one that metric carries.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_metrics_that_exist() {
    let w = start("token_env = \"ADMIN_TOKEN\"").await;
    let proxy = w.gateway.local_addr();
    // One allowed call (Composio answers) and one refusal, so the request metrics exist.
    for tool in ["GITHUB_GET_THE_AUTHENTICATED_USER", "GMAIL_SEND_EMAIL"] {
        let t = token("alice");
        let call = format!(
            "POST /api/v3.1/tools/execute/{tool} HTTP/1.1\r\nHost: {proxy}\r\nx-api-key: {t}\r\nContent-Type: application/json\r\nContent-Length: 16\r\nConnection: close\r\n\r\n{{\"arguments\":{{}}}}"
        );
        raw(proxy, &call).await;
    }
    let metrics = raw(w.admin, &get(w.admin, "/metrics", None, None)).await;
    assert_eq!(status(&metrics), 200);
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/entitygate-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 9, "{exprs:?}");
    let mut checked = 0;
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("entitygate_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            let lines: Vec<&str> = metrics
                .lines()
                .filter(|l| {
                    l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))
                })
                .collect();
            assert!(
                !lines.is_empty(),
                "the dashboard queries {name} ({base}), which /metrics does not have"
            );
            // Labels the query names right after the metric (`{decision!="allow"}`).
            if let Some(selector) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) {
                for m in selector.0.split(',') {
                    let label: String = m
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        lines.iter().any(|l| l.contains(&format!("{label}=\""))),
                        "{name} has no label {label}"
                    );
                }
            }
            checked += 1;
        }
        // Labels grouped by exist on the metrics grouped.
        for by in expr.split("by (").skip(1) {
            for label in by.split(')').next().unwrap_or_default().split(',') {
                let label = label.trim();
                assert!(
                    metrics.contains(&format!("{label}=\"")),
                    "the dashboard groups by {label}, which no metric carries"
                );
            }
        }
    }
    assert!(checked >= 12, "{checked} metric references checked");
    w.gateway.shutdown().await;
}
