//! A small W3C WebDriver client for the browser tests: chromedriver driving headless
//! Debian Chromium, over the JSON wire protocol with the HTTP client the daemon already
//! depends on (a handful of endpoints; no client crate needed).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The key W3C WebDriver names element references with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver with one headless Chromium session; both end when this is dropped.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
}

/// A program on PATH (or in /usr/bin), or a failure naming the package to install.
fn program(name: &str, package: &str) -> String {
    let found = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain([std::path::PathBuf::from("/usr/bin").join(name)])
        .find(|p| p.is_file());
    match found {
        Some(p) => p.display().to_string(),
        None => panic!(
            "{name} is not installed: `apt-get install -y chromium chromium-driver` (.ci/run installs {package} when missing)"
        ),
    }
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session.
    pub async fn start() -> Browser {
        let chromium = program("chromium", "chromium");
        let driver_bin = program("chromedriver", "chromium-driver");
        let port = super::ops::free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer within 20s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1100",
                         "--hide-scrollbars", "--force-color-profile=srgb"]
            }
        }}});
        let mut b = Browser {
            driver,
            http,
            session: String::new(),
        };
        let v = b.call("POST", &format!("{base}/session"), Some(caps)).await;
        let id = v["sessionId"].as_str().expect("session id").to_owned();
        b.session = format!("{base}/session/{id}");
        b
    }

    async fn call(&self, method: &str, url: &str, body: Option<Value>) -> Value {
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self
                .http
                .post(url)
                .header("Content-Type", "application/json")
                .body(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = r.status();
        let text = r.text().await.expect("webdriver body");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"));
        assert!(status.is_success(), "{method} {url}: {status} {text}");
        v["value"].clone()
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("{}{path}", self.session), body)
            .await
    }

    /// Opens a URL and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The current URL once it contains `needle` (a click that submits a form returns
    /// before the browser has navigated; on a loaded machine, well before).
    pub async fn wait_url(&self, needle: &str, within: Duration) -> String {
        wait_contains("the URL", needle, within, async || self.url().await).await
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), None).await;
    }

    /// Types into the first element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Runs a script in the page; returns its value.
    pub async fn script(&self, js: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .await
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        self.script("return document.body.innerText;")
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Waits until the page's visible text contains `needle`.
    pub async fn wait_text(&self, needle: &str, within: Duration) {
        wait_contains("the page", needle, within, async || self.text().await).await;
    }

    /// Writes a PNG of the page as it is to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 screenshot"))
            .expect("decode screenshot");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Ends the session (the driver goes when this is dropped).
    pub async fn close(self) {
        self.cmd("DELETE", "", None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Reads `read` every 100 ms until what it returns contains `needle`, and returns that;
/// fails the test, showing the last reading of `what`, once `within` has passed.
async fn wait_contains(
    what: &str,
    needle: &str,
    within: Duration,
    read: impl AsyncFn() -> String,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let got = read().await;
        if got.contains(needle) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {what} within {within:?}:\n{got}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
