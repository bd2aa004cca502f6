//! Headless Chromium for browser tests, driven through chromedriver's W3C WebDriver HTTP API by
//! a small blocking client (`ureq`, plain HTTP to 127.0.0.1 only).
//!
//! ```ignore
//! let browser = Browser::start("login");           // chromedriver + a fresh Chromium session
//! browser.goto(&format!("{base}/login"));
//! browser.fill("#username", "admin");
//! browser.click("button[type=submit]");
//! browser.wait_for_text("Dashboard", WAIT);
//! let shot = browser.screenshot("dashboard");      // saved under the artifact dir
//! assert!(shot.count(|p| p == [255, 0, 0]) > 0);
//! ```
//!
//! - Binaries: `$VERTEBRA_CHROMEDRIVER` or `chromedriver` on `PATH`; `$VERTEBRA_CHROMIUM` or
//!   Debian's `/usr/lib/chromium/chromium` (the real binary behind the `/usr/bin/chromium`
//!   wrapper script). Missing ones fail the test with the install command
//!   (`apt-get install chromium chromium-driver`, or `scripts/provision-system.sh` as root);
//!   nothing is skipped.
//! - Chromium runs with `--headless --no-sandbox --disable-gpu --disable-background-networking
//!   --disable-component-update --disable-sync --no-first-run`, a fresh `--user-data-dir` (a
//!   temp dir removed afterwards), a fixed 1920 × 1600 window at device scale 1 (screenshot
//!   pixels are CSS pixels), and `acceptInsecureCerts` so self-signed test certificates are
//!   accepted — or, with [`Browser::start_trusting`], no insecure certificate except the one
//!   whose public key is named (`--ignore-certificate-errors-spki-list`): the console tests
//!   trust exactly the certificate `vertebrad serve` generated.
//! - chromedriver listens on a free loopback port and runs in its own process group; dropping
//!   the [`Browser`] (also while a test panics) ends the WebDriver session and kills the whole
//!   group, Chromium included.
//! - Screenshots and failure screenshots go to `$VERTEBRA_ARTIFACTS` or
//!   `<cargo target dir>/browser-artifacts`, named `<test>-<name>.png`, for CI to keep.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// How long a wait helper waits by default.
pub const WAIT: Duration = Duration::from_secs(20);

/// The WebDriver element reference key.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// What to run to install the browser.
const INSTALL: &str = "install Debian's browser and driver: `apt-get install chromium \
                       chromium-driver` (or run scripts/provision-system.sh as root)";

/// The flags the project starts Chromium with (issue 11), plus a fixed window.
pub const CHROMIUM_FLAGS: [&str; 11] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1920,1600",
    "--force-device-scale-factor=1",
    "--hide-scrollbars",
];

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver: `$VERTEBRA_CHROMEDRIVER` or `PATH`.
pub fn chromedriver_path() -> PathBuf {
    let path = std::env::var_os("VERTEBRA_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| on_path("chromedriver"));
    match path {
        Some(p) if p.is_file() => p,
        Some(p) => panic!("chromedriver {} does not exist: {INSTALL}", p.display()),
        None => panic!("chromedriver is not installed: {INSTALL}"),
    }
}

/// Chromium: `$VERTEBRA_CHROMIUM`, else Debian's binary, else `chromium` on `PATH`.
pub fn chromium_path() -> PathBuf {
    if let Some(p) = std::env::var_os("VERTEBRA_CHROMIUM").map(PathBuf::from) {
        assert!(
            p.is_file(),
            "VERTEBRA_CHROMIUM={} does not exist",
            p.display()
        );
        return p;
    }
    let debian = Path::new("/usr/lib/chromium/chromium");
    if debian.is_file() {
        return debian.to_path_buf();
    }
    on_path("chromium").unwrap_or_else(|| panic!("Chromium is not installed: {INSTALL}"))
}

/// Where screenshots are kept: `$VERTEBRA_ARTIFACTS`, else `browser-artifacts` in the cargo
/// target directory of the running test binary.
pub fn artifact_dir() -> PathBuf {
    let dir = std::env::var_os("VERTEBRA_ARTIFACTS").map_or_else(
        || {
            // The test binary is <target>/<profile>/deps/<name>-<hash>.
            let exe = std::env::current_exe().expect("test binary path");
            exe.ancestors()
                .nth(3)
                .map_or_else(std::env::temp_dir, Path::to_path_buf)
                .join("browser-artifacts")
        },
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create the artifact dir {}: {e}", dir.display()));
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A decoded screenshot (RGBA) and where its PNG was saved.
pub struct Screenshot {
    /// Width, pixels.
    pub width: usize,
    /// Height, pixels.
    pub height: usize,
    /// RGBA, row-major.
    pub rgba: Vec<u8>,
    /// The PNG as the browser sent it.
    pub png: Vec<u8>,
    /// Where the PNG was saved.
    pub path: PathBuf,
}

impl Screenshot {
    /// The RGB of pixel `(x, y)`.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = 4 * (y * self.width + x);
        [self.rgba[i], self.rgba[i + 1], self.rgba[i + 2]]
    }

    /// Number of pixels whose RGB satisfies `f`.
    pub fn count(&self, f: impl Fn([u8; 3]) -> bool) -> usize {
        self.rgba
            .chunks_exact(4)
            .filter(|p| f([p[0], p[1], p[2]]))
            .count()
    }

    /// Number of pixels in the rectangle `(x, y, w, h)` (clipped) whose RGB satisfies `f`.
    pub fn count_in(
        &self,
        rect: (usize, usize, usize, usize),
        f: impl Fn([u8; 3]) -> bool,
    ) -> usize {
        let (x0, y0, w, h) = rect;
        let mut n = 0;
        for y in y0..(y0 + h).min(self.height) {
            for x in x0..(x0 + w).min(self.width) {
                n += usize::from(f(self.pixel(x, y)));
            }
        }
        n
    }
}

/// Decodes a PNG to RGBA.
pub fn decode_png(png: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::ALPHA);
    let mut reader = decoder.read_info().expect("screenshot is a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("screenshot decodes");
    buf.truncate(info.buffer_size());
    let (w, h) = (info.width as usize, info.height as usize);
    let rgba = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        other => panic!("unexpected screenshot colour type {other:?}"),
    };
    (w, h, rgba)
}

/// A WebDriver element reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(String);

/// chromedriver plus one headless Chromium session; everything ends on drop.
pub struct Browser {
    driver: Child,
    url: String,
    session: String,
    agent: ureq::Agent,
    test: String,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium session for the test `test` (names its
    /// artifacts) that accepts any certificate. Panics with the install command when a binary is
    /// missing.
    pub fn start(test: &str) -> Browser {
        Self::start_with(test, None)
    }

    /// Like [`Browser::start`], but certificate errors are ignored only for a certificate whose
    /// public key (SubjectPublicKeyInfo) has the SHA-256 `spki_sha256_base64` (Chromium's
    /// `--ignore-certificate-errors-spki-list`, honoured with `--user-data-dir`): the browser
    /// trusts exactly the server's certificate and refuses any other.
    pub fn start_trusting(test: &str, spki_sha256_base64: &str) -> Browser {
        Self::start_with(test, Some(spki_sha256_base64))
    }

    fn start_with(test: &str, trusted_spki: Option<&str>) -> Browser {
        let driver_path = chromedriver_path();
        let chromium = chromium_path();
        let port = free_port();
        let log = artifact_dir().join(format!("{test}-chromedriver.log"));
        let mut command = Command::new(&driver_path);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}: {INSTALL}", driver_path.display()));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let profile = tempfile::Builder::new()
            .prefix("vertebra-chromium-")
            .tempdir()
            .expect("a Chromium profile dir");
        let mut browser = Browser {
            driver,
            url: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            agent,
            test: test.to_owned(),
            profile,
        };
        browser.wait_driver_ready();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser.profile.path().display()
        ));
        if let Some(spki) = trusted_spki {
            args.push(format!("--ignore-certificate-errors-spki-list={spki}"));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "acceptInsecureCerts": trusted_spki.is_none(),
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": chromium.to_string_lossy(), "args": args},
        }}});
        let value = browser.call("POST", "/session", Some(caps));
        value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {value}"))
            .clone_into(&mut browser.session);
        browser
    }

    fn wait_driver_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.driver.try_wait().expect("chromedriver status") {
                panic!("chromedriver exited at start ({status}): {INSTALL}");
            }
            let ready = self
                .agent
                .get(format!("{}/status", self.url))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true));
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One WebDriver command; returns `value`, panics with the driver's error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let mut response = response.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: reading the answer: {e}"));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}: {text}"));
        assert!(
            status.is_success(),
            "WebDriver {method} {path} answered {status}: {}",
            v["value"]
        );
        v["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Navigates to `url` and waits for the page load.
    pub fn goto(&self, url: &str) {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(json!({"url": url})),
        );
    }

    /// The current URL.
    pub fn current_url(&self) -> String {
        self.call("GET", &self.session_path("/url"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn try_find(&self, css: &str) -> Option<Element> {
        let url = format!("{}{}", self.url, self.session_path("/elements"));
        let mut r = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(json!({"using": "css selector", "value": css}).to_string())
            .ok()?;
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
        v["value"]
            .as_array()?
            .first()?
            .get(ELEMENT_KEY)?
            .as_str()
            .map(|s| Element(s.to_owned()))
    }

    /// The first element matching `css`; panics (with a screenshot) if there is none.
    pub fn find(&self, css: &str) -> Element {
        self.try_find(css)
            .unwrap_or_else(|| self.fail(&format!("no element matches {css:?}")))
    }

    /// Waits until an element matches `css`.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_find(css) {
                return e;
            }
            if Instant::now() > deadline {
                self.fail(&format!("no element matched {css:?} within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until the page's text contains `text`.
    pub fn wait_for_text(&self, text: &str, timeout: Duration) {
        self.wait_until(
            "return document.body !== null && document.body.innerText.includes(arguments[0]);",
            &[json!(text)],
            timeout,
        );
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its result.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Polls `script` until it returns something other than `null`, `false`, `0` or `""`;
    /// returns that value.
    pub fn wait_until(&self, script: &str, args: &[Value], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.execute(script, args);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                self.fail(&format!("waited {timeout:?} for `{script}`"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.session_path(&format!("/element/{}/click", e.0)),
            None,
        );
    }

    /// Clears the form field matching `css` and types `value` into it.
    pub fn fill(&self, css: &str, value: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.session_path(&format!("/element/{}/clear", e.0)),
            None,
        );
        self.call(
            "POST",
            &self.session_path(&format!("/element/{}/value", e.0)),
            Some(json!({"text": value})),
        );
    }

    /// Types `text` into the element matching `css` without clearing it first: for a file
    /// input, `text` is the absolute path of the file to choose.
    pub fn send_keys(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.session_path(&format!("/element/{}/value", e.0)),
            Some(json!({"text": text})),
        );
    }

    /// The rendered text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call(
            "GET",
            &self.session_path(&format!("/element/{}/text", e.0)),
            None,
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// A screenshot of the viewport, saved as `<artifacts>/<test>-<name>.png` and decoded.
    pub fn screenshot(&self, name: &str) -> Screenshot {
        let b64 = self.call("GET", &self.session_path("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("screenshot is base64 text"))
            .expect("screenshot base64 decodes");
        let path = artifact_dir().join(format!("{}-{name}.png", self.test));
        std::fs::write(&path, &png)
            .unwrap_or_else(|e| panic!("cannot save {}: {e}", path.display()));
        let (width, height, rgba) = decode_png(&png);
        Screenshot {
            width,
            height,
            rgba,
            png,
            path,
        }
    }

    /// Panics with `message`, the current URL, the start of the page's text and a saved
    /// failure screenshot.
    pub fn fail(&self, message: &str) -> ! {
        let url = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.current_url()))
            .unwrap_or_default();
        let text = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.execute(
                "return document.body ? document.body.innerText.slice(0, 3000) : '';",
                &[],
            )
        }))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
        let shot = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.screenshot("failure").path
        }))
        .map_or_else(|_| "no screenshot".into(), |p| p.display().to_string());
        panic!("browser: {message} (page {url}; screenshot {shot}); the page says:\n{text}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Best effort: closes Chromium cleanly; the group kill below is the guarantee.
            let _ = self
                .agent
                .delete(format!("{}/session/{}", self.url, self.session))
                .call();
        }
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
