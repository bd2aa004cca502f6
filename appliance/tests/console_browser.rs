//! The admin web console of the real `vertebrad serve` binary, driven in headless Chromium
//! (`support/browser.rs`) over HTTPS with the certificate the daemon generated — the browser
//! trusts exactly that certificate's public key, nothing else — on the embedded SQLite store,
//! with DCMTK peers. One daemon, one browser, the flows of issue 11 in order:
//!
//! 1. first-run setup: a wrong token is refused, the one-time token from
//!    `<state>/web-setup-token` creates the admin (the file is deleted, `/setup` closes), the
//!    first login is forced to `/password` (other pages redirect there) until the password is
//!    changed;
//! 2. login / logout / lockout: a new operator is created through the Users page; after
//!    `lockout_threshold` wrong passwords even the right one is refused; the Users page shows
//!    the lock; an admin password reset lifts it and the operator logs in (forced to change);
//! 3. a phantom study sent by DCMTK `storescu` (sent at the start, so its ~15 s analysis with
//!    the committed demo model overlaps the other flows) appears in the series list as
//!    succeeded; its result viewer, opened from the series page, paints the three panes with
//!    pixels of the SEG palette blended over the CT inside each pane (screenshot kept as a CI
//!    artifact); switching the labels off removes them; the time to first paint is printed;
//! 4. destinations: created through the form, "Test (C-ECHO)" against DCMTK `storescp` shows
//!    success, against a closed port shows the failure;
//! 5. model: a tampered bundle chosen in the upload form's file input is refused with the
//!    reason (`… signature does not verify …`), nothing is left in `<state>/bundles/`, and the
//!    model page still shows the same running bundle and no uploaded one;
//! 6. the audit log page lists an entry for each action above (setup refused and done, logins,
//!    failed logins, lockout, locked refusal, password change and reset, user create, logouts,
//!    destination creates, both echoes, the refused upload), and its actor/outcome filter
//!    narrows the list.
//!
//! A failure names what was on screen (page text, URL, screenshot in the artifact directory)
//! and keeps the daemon's log there as `console-vertebrad.log`. Chromium, chromedriver,
//! `vertebrad` and `storescp` are killed when the test ends, also on failure.
//!
//! Needs Debian's `chromium`, `chromium-driver` and `dcmtk` (scripts/provision-system.sh) and
//! the ONNX Runtime library (scripts/provision-onnxruntime.sh). `VERTEBRA_CONSOLE_PHANTOM=
//! IN_PLANE[,SLICES]` (default `128`) sizes the phantom, e.g. `512,300` for the time to first
//! paint of a full-size study through the real console (docs/benchmarks.md).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use support::browser::{Browser, WAIT, artifact_dir};
use support::e2e::{dcmtk, free_port, ok, pacs, phantom_series_sized, start_daemon_console};
use vertebra_core::anatomy::Vertebra;
use vertebra_reports::keyimage::LABEL_ALPHA;
use vertebra_reports::palette;

const ADMIN: &str = "admin";
const ADMIN_INITIAL: &str = "initial admin password 1";
const ADMIN_PASSWORD: &str = "the admin's own password 2";
const OPERATOR: &str = "tech";
const OPERATOR_TEMPORARY: &str = "temporary tech password 1";
const OPERATOR_RESET: &str = "reset tech password 22";
const OPERATOR_OWN: &str = "the tech's own password 3";
/// Failed logins that lock an account in this test's configuration.
const LOCKOUT_THRESHOLD: usize = 3;
/// What every refused login says.
const REFUSED: &str = "Login refused";

/// The console on loopback only, any free port, a small lockout threshold.
const WEB_TABLE: &str = "[web]\nbind = \"127.0.0.1\"\nport = 0\nlockout_threshold = 3\n";

/// The longest wait for the phantom's analysis (it takes ~15 s at 128² on 2 cores).
const ANALYSIS_LIMIT: Duration = Duration::from_secs(240);

/// Keeps the daemon's log as a CI artifact when the test fails.
struct KeepLogOnFailure(PathBuf);

impl Drop for KeepLogOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = artifact_dir().join("console-vertebrad.log");
            if std::fs::copy(&self.0, &kept).is_ok() {
                eprintln!("vertebrad's log: {}", kept.display());
            }
        }
    }
}

/// The base64 SHA-256 of the SubjectPublicKeyInfo of the first certificate in `pem` (what
/// Chromium's `--ignore-certificate-errors-spki-list` takes).
fn spki_sha256_base64(pem: &Path) -> String {
    let text = std::fs::read_to_string(pem)
        .unwrap_or_else(|e| panic!("the console certificate {}: {e}", pem.display()));
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("the certificate PEM is base64");
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial,
    // signature, issuer, validity, subject, subjectPublicKeyInfo, ... }, ... }
    let (_, cert) = der_element(&der);
    let (_, tbs) = der_element(der_contents(cert));
    let mut rest = der_contents(tbs);
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let (len, element) = der_element(rest);
        fields.push(element);
        rest = &rest[len..];
    }
    let skip = usize::from(fields.first().is_some_and(|f| f[0] == 0xA0));
    let spki = fields
        .get(skip + 5)
        .expect("the certificate has a public key");
    assert_eq!(spki[0], 0x30, "SubjectPublicKeyInfo is a SEQUENCE");
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(spki))
}

/// The DER element at the start of `buf`: (its total length, the element with its header).
fn der_element(buf: &[u8]) -> (usize, &[u8]) {
    let (header, len) = der_header(buf);
    (header + len, &buf[..header + len])
}

/// The contents of the DER element `element`.
fn der_contents(element: &[u8]) -> &[u8] {
    let (header, len) = der_header(element);
    &element[header..header + len]
}

/// (header length, content length) of the DER element at the start of `buf`.
fn der_header(buf: &[u8]) -> (usize, usize) {
    let first = buf[1];
    if first < 0x80 {
        return (2, usize::from(first));
    }
    let n = usize::from(first & 0x7F);
    let len = buf[2..2 + n]
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    (2 + n, len)
}

/// The phantom's size: `VERTEBRA_CONSOLE_PHANTOM=IN_PLANE[,SLICES]`, default 128².
fn phantom_size() -> (usize, Option<usize>) {
    let v = std::env::var("VERTEBRA_CONSOLE_PHANTOM").unwrap_or_else(|_| "128".into());
    let mut it = v.split(',').map(|p| {
        p.trim()
            .parse::<usize>()
            .expect("VERTEBRA_CONSOLE_PHANTOM is IN_PLANE[,SLICES]")
    });
    (it.next().unwrap_or(128), it.next())
}

/// Sends a directory of DICOM files to the daemon as the modality.
fn send(port: u16, dicom: &Path) {
    ok(Command::new(dcmtk("storescu"))
        .args(["-aet", "MODALITY", "-aec", "VERTEBRA", "+sd"])
        .arg("127.0.0.1")
        .arg(port.to_string())
        .arg(dicom)
        .env("TCP_NODELAY", "1"));
}

/// The browser on the console at `base`, with the assertions the flows share.
struct Console<'a> {
    b: &'a Browser,
    base: String,
}

impl Console<'_> {
    fn goto(&self, path: &str) {
        self.b.goto(&format!("{}{path}", self.base));
    }

    /// Clicks `css` (a submit button or a link) and waits until the next document has loaded.
    fn submit(&self, css: &str) {
        self.b.execute("window.vertebraTestOldPage = true;", &[]);
        self.b.click(css);
        self.b.wait_until(
            "return window.vertebraTestOldPage === undefined \
               && document.readyState === 'complete';",
            &[],
            WAIT,
        );
    }

    fn path(&self) -> String {
        self.b
            .execute("return location.pathname;", &[])
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn text(&self) -> String {
        self.b
            .execute("return document.body ? document.body.innerText : '';", &[])
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn expect_path(&self, want: &str, doing: &str) {
        let path = self.path();
        if path != want {
            self.b
                .fail(&format!("{doing}: expected to be at {want}, at {path}"));
        }
    }

    fn expect_text(&self, want: &str, doing: &str) {
        if !self.text().contains(want) {
            self.b
                .fail(&format!("{doing}: the page does not say {want:?}"));
        }
    }

    fn login(&self, user: &str, password: &str) {
        self.goto("/login");
        self.b.fill("#username", user);
        self.b.fill("#password", password);
        self.submit("form[action='/login'] button[type=submit]");
    }

    fn logout(&self) {
        self.submit("form[action='/logout'] button[type=submit]");
        self.expect_path("/login", "logging out");
    }

    /// The rows of the first table matching `css` below its header, cell texts trimmed.
    fn rows(&self, css: &str) -> Vec<Vec<String>> {
        let v = self.b.execute(
            "var t = document.querySelector(arguments[0]); \
             if (!t) { return null; } \
             return Array.from(t.querySelectorAll('tr')).slice(1).map(function (r) { \
               return Array.from(r.cells).map(function (c) { return c.innerText.trim(); }); });",
            &[json!(css)],
        );
        if v.is_null() {
            self.b.fail(&format!("no table {css:?}"));
        }
        serde_json::from_value(v).expect("table rows are text")
    }
}

/// 1. First-run setup with the token file, the forced password change.
fn first_run_setup(c: &Console<'_>, state: &Path) {
    let token_file = state.join("web-setup-token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file)
            .unwrap_or_else(|e| panic!("no setup token {}: {e}", token_file.display()))
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the setup token file's mode");
    let token = std::fs::read_to_string(&token_file).unwrap();

    c.goto("/");
    c.expect_path("/login", "opening the console without a session");
    c.expect_text("No user exists yet", "the login page before setup");
    c.submit("a[href='/setup']");
    c.expect_text("First-run setup", "the setup page");

    let fill = |token: &str| {
        c.b.fill("#token", token);
        c.b.fill("#username", ADMIN);
        c.b.fill("#password", ADMIN_INITIAL);
        c.b.fill("#confirm", ADMIN_INITIAL);
        c.submit("form[action='/setup'] button[type=submit]");
    };
    fill("0123456789abcdef0123456789abcdef");
    c.expect_text("Wrong setup token.", "setup with a wrong token");
    fill(token.trim());
    c.expect_path("/login", "setup with the token from the file");
    assert!(
        !token_file.exists(),
        "the one-time token file is deleted after setup"
    );
    c.goto("/setup");
    c.expect_text("Setup is closed", "/setup after setup");

    c.login(ADMIN, ADMIN_INITIAL);
    c.expect_path("/password", "the first login");
    c.expect_text(
        "You must choose a new password",
        "the forced password change",
    );
    c.goto("/series");
    c.expect_path("/password", "another page before the password is changed");
    c.b.fill("#current", ADMIN_INITIAL);
    c.b.fill("#password", ADMIN_PASSWORD);
    c.b.fill("#confirm", ADMIN_PASSWORD);
    c.submit("form[action='/password'] button[type=submit]");
    c.expect_path("/", "after the password change");
    c.expect_text("Dashboard", "the dashboard after the password change");
    c.goto("/series");
    c.expect_path("/series", "a page after the password change");
}

/// The Users page's row of `name`: (state text, its reset form's action).
fn user_row(c: &Console<'_>, name: &str) -> (String, String) {
    let v = c.b.execute(
        "var name = arguments[0]; \
         var r = Array.from(document.querySelectorAll('main table tr')).find(function (r) { \
           return r.cells.length > 2 && r.cells[0].innerText.trim() === name; }); \
         if (!r) { return null; } \
         var f = r.querySelector(\"form[action$='/password']\"); \
         return [r.cells[2].innerText.trim(), f ? f.getAttribute('action') : ''];",
        &[json!(name)],
    );
    match v.as_array().map(Vec::as_slice) {
        Some([Value::String(state), Value::String(action)]) => (state.clone(), action.clone()),
        _ => {
            c.b.fail(&format!("no row for user {name:?} on the Users page"))
        }
    }
}

/// 2. A new operator, logout, lockout after repeated failures, the lock shown and lifted.
fn login_logout_lockout(c: &Console<'_>) {
    c.goto("/users");
    c.b.fill("#username", OPERATOR);
    c.b.click("#role option[value='operator']");
    c.b.fill("#password", OPERATOR_TEMPORARY);
    c.submit("form[action='/users'] button[type=submit]");
    c.expect_path("/users", "creating a user");
    let (state, _) = user_row(c, OPERATOR);
    assert!(state.contains("active"), "new user's state: {state:?}");
    c.logout();

    for i in 0..LOCKOUT_THRESHOLD {
        c.login(OPERATOR, &format!("wrong password number {i}"));
        c.expect_path("/login", "a wrong password");
        c.expect_text(REFUSED, "a wrong password");
    }
    c.login(OPERATOR, OPERATOR_TEMPORARY);
    c.expect_path("/login", "the right password of a locked account");
    c.expect_text(REFUSED, "the right password of a locked account");

    c.login(ADMIN, ADMIN_PASSWORD);
    c.expect_path("/", "the admin's login");
    c.goto("/users");
    let (state, reset) = user_row(c, OPERATOR);
    if !state.contains("locked until") {
        c.b.fail(&format!(
            "the locked user's state reads {state:?}, not \"locked until …\""
        ));
    }
    c.b.fill(
        &format!("form[action='{reset}'] input[name=password]"),
        OPERATOR_RESET,
    );
    c.submit(&format!("form[action='{reset}'] button[type=submit]"));
    c.expect_path("/users", "resetting the locked user's password");
    let (state, _) = user_row(c, OPERATOR);
    assert!(
        state.contains("active") && state.contains("must change password"),
        "after the reset the user is unlocked and must change the password: {state:?}"
    );
    c.logout();

    c.login(OPERATOR, OPERATOR_RESET);
    c.expect_path("/password", "the unlocked user's login");
    c.b.fill("#current", OPERATOR_RESET);
    c.b.fill("#password", OPERATOR_OWN);
    c.b.fill("#confirm", OPERATOR_OWN);
    c.submit("form[action='/password'] button[type=submit]");
    c.expect_path("/", "the operator's password change");
    c.expect_text(&format!("{OPERATOR} (operator)"), "the operator's session");
    c.logout();
    c.login(ADMIN, ADMIN_PASSWORD);
    c.expect_path("/", "the admin's login");
}

/// Creates a destination through the form; returns its page's path.
fn create_destination(c: &Console<'_>, name: &str, ae: &str, port: u16, enabled: bool) -> String {
    c.goto("/destinations");
    c.b.fill("#name", name);
    c.b.fill("#ae_title", ae);
    c.b.fill("#host", "127.0.0.1");
    c.b.fill("#port", &port.to_string());
    let checked =
        c.b.execute("return document.getElementById('enabled').checked;", &[]);
    if checked != json!(enabled) {
        c.b.click("#enabled");
    }
    c.submit("form[action='/destinations'] button[type=submit]");
    let path = c.path();
    if !path.starts_with("/destinations/") {
        c.b.fail(&format!("creating destination {name}: at {path}"));
    }
    path
}

/// 4. Destination create + C-ECHO against storescp (success) and a closed port (failure).
fn destinations_and_echo(c: &Console<'_>, pacs_port: u16) -> u16 {
    let page = create_destination(c, "pacs", "PACS", pacs_port, true);
    c.expect_text("Destination pacs", "the new destination's page");
    c.submit(&format!("form[action='{page}/echo'] button[type=submit]"));
    c.expect_text("C-ECHO pacs", "the echo result page");
    let banner = c.b.text("main .banner");
    if !banner.starts_with("C-ECHO succeeded: status 0x0000")
        || c.b.execute(
            "return document.querySelector('main .banner.info') !== null;",
            &[],
        ) != json!(true)
    {
        c.b.fail(&format!("C-ECHO against storescp shows {banner:?}"));
    }

    let closed = free_port();
    let page = create_destination(c, "closed", "NOBODY", closed, false);
    c.submit(&format!("form[action='{page}/echo'] button[type=submit]"));
    let banner = c.b.text("main .banner");
    if !banner.starts_with("C-ECHO failed:")
        || c.b.execute(
            "return document.querySelector('main .banner.error') !== null;",
            &[],
        ) != json!(true)
    {
        c.b.fail(&format!("C-ECHO against a closed port shows {banner:?}"));
    }

    c.goto("/destinations");
    let rows = c.rows("main table");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.first().map(String::as_str) == Some(name))
            .cloned()
            .unwrap_or_else(|| c.b.fail(&format!("destination {name} is not listed")))
    };
    let port = pacs_port.to_string();
    assert_eq!(
        row("pacs")[1..6],
        ["PACS", "127.0.0.1", port.as_str(), "no", "enabled"]
    );
    assert_eq!(row("closed")[5], "disabled");
    closed
}

/// The running bundle's manifest SHA-256 and the "next start" sentence of the model page.
fn model_state(c: &Console<'_>) -> (String, String) {
    c.goto("/model");
    let v = c.b.execute(
        "var th = Array.from(document.querySelectorAll('main th')).find(function (h) { \
           return h.innerText.trim() === 'Manifest SHA-256'; }); \
         var h2 = Array.from(document.querySelectorAll('main h2')).find(function (h) { \
           return h.innerText.trim() === 'At the next start'; }); \
         return [th ? th.nextElementSibling.innerText.trim() : '', \
                 h2 ? h2.nextElementSibling.innerText.trim() : ''];",
        &[],
    );
    match v.as_array().map(Vec::as_slice) {
        Some([Value::String(sha), Value::String(next)]) if sha.len() == 64 => {
            (sha.clone(), next.clone())
        }
        _ => {
            c.b.fail(&format!("the model page shows no running bundle ({v})"))
        }
    }
}

/// 5. A tampered bundle through the model page's file input: refused with the reason.
fn bundle_refusal(c: &Console<'_>, work: &Path, state: &Path) {
    let demo = support::repo().join("models/demo-bundle");
    let tampered = work.join("tampered-bundle");
    std::fs::create_dir_all(&tampered).unwrap();
    for e in std::fs::read_dir(&demo).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tampered.join(e.file_name())).unwrap();
    }
    let manifest = tampered.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let changed = text.replacen("window_overlap = 0.5", "window_overlap = 0.25", 1);
    assert_ne!(
        changed, text,
        "the demo manifest has window_overlap = 0.5 to tamper with"
    );
    std::fs::write(&manifest, changed).unwrap();
    let tar = work.join("tampered.tar");
    vertebra_export::bundle::write_tar(&tampered, &tar).unwrap();

    let before = model_state(c);
    c.expect_text(
        "No bundle uploaded through the console.",
        "the model history before the upload",
    );
    c.b.send_keys(
        "form[action='/model/upload'] input[type=file][name=bundle]",
        tar.to_str().unwrap(),
    );
    c.submit("form[action='/model/upload'] button[type=submit]");
    c.expect_text("Bundle refused", "the tampered bundle's upload");
    let banner = c.b.text("main .banner.error");
    if !(banner.starts_with("The bundle was refused:")
        && banner.contains("signature does not verify"))
    {
        c.b.fail(&format!("the refusal reads {banner:?}"));
    }
    let after = model_state(c);
    assert_eq!(
        after, before,
        "the installed bundle changed after a refused upload"
    );
    c.expect_text(
        "No bundle uploaded through the console.",
        "the model history after the refused upload",
    );
    assert!(
        after.1.contains("The bundle of the configuration file"),
        "next start: {:?}",
        after.1
    );
    let left: Vec<_> = std::fs::read_dir(state.join("bundles"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the refused upload left {left:?} in <state>/bundles"
    );
}

/// Every colour a pixel of one of `vertebrae`'s labels can take in the overlay: its palette
/// colour blended over each grey, greys themselves excluded (so CT pixels never count).
fn overlay_colours(vertebrae: &[Vertebra]) -> std::collections::HashSet<[u8; 3]> {
    let mut set = std::collections::HashSet::new();
    for v in vertebrae {
        let c = palette::vertebra_rgb(*v);
        for g in 0..=255u8 {
            set.insert(std::array::from_fn(|i| {
                (LABEL_ALPHA * f64::from(c[i]) + (1.0 - LABEL_ALPHA) * f64::from(g))
                    .round()
                    .clamp(0.0, 255.0) as u8
            }));
        }
    }
    set.retain(|c| !(c[0] == c[1] && c[1] == c[2]));
    set
}

/// 3. The analysed phantom in the series list, its result viewer with the overlay.
fn series_and_viewer(c: &Console<'_>, log: &Path) {
    let deadline = Instant::now() + ANALYSIS_LIMIT;
    let id = loop {
        c.goto("/series");
        let rows = c.rows("main table");
        // Columns: #, study date, modality, patient, instances, source AE, received, job, result.
        if let Some(r) = rows.iter().find(|r| r.len() == 9) {
            assert_eq!((r[2].as_str(), r[5].as_str()), ("CT", "MODALITY"), "{r:?}");
            match r[8].as_str() {
                "succeeded" => break r[0].clone(),
                "failed" | "rejected" => c.b.fail(&format!(
                    "the phantom's analysis ended {:?}; vertebrad log {}",
                    r[8],
                    log.display()
                )),
                _ => {}
            }
        }
        if Instant::now() > deadline {
            c.b.fail(&format!(
                "no succeeded series in the list after {ANALYSIS_LIMIT:?}; vertebrad log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    c.submit(&format!("main table a[href='/series/{id}']"));
    c.expect_text("Status succeeded", "the series page");
    let viewer = format!("/series/{id}/viewer");
    let clicked = Instant::now();
    c.submit(&format!("a[href='{viewer}']"));
    c.expect_path(&viewer, "opening the result viewer");
    let first_paint = c.b.wait_until(
        "return window.vertebraViewer ? window.vertebraViewer.firstPaintMs : null;",
        &[],
        Duration::from_secs(60),
    );
    println!(
        "time to first paint of the result viewer through the console (cold cache: the series \
         is loaded on this first open): {:.0} ms after navigation start; {:.0} ms from the click",
        first_paint.as_f64().unwrap_or(f64::NAN),
        clicked.elapsed().as_secs_f64() * 1000.0
    );
    let ready = c.b.execute(
        "return document.getElementById('viewer').dataset.state;",
        &[],
    );
    if ready != json!("ready") {
        c.b.fail(&format!("the viewer's state is {ready}"));
    }
    let names: Vec<String> = serde_json::from_value(c.b.execute(
        "return Array.from(document.querySelectorAll('#viewer-vertebrae tr[data-name]')) \
           .map(function (r) { return r.getAttribute('data-name'); });",
        &[],
    ))
    .unwrap();
    let vertebrae: Vec<Vertebra> = names
        .iter()
        .map(|n| {
            Vertebra::from_name(n)
                .unwrap_or_else(|| c.b.fail(&format!("vertebra row {n:?} is no vertebra")))
        })
        .collect();
    if vertebrae.is_empty() {
        c.b.fail("the viewer lists no vertebra");
    }
    let colours = overlay_colours(&vertebrae);

    c.b.execute(
        "document.querySelector('.viewer-panes').scrollIntoView();",
        &[],
    );
    let panes = || -> Vec<Vec<f64>> {
        serde_json::from_value(c.b.execute(
            "return ['axial','sagittal','coronal'].map(function (p) { \
               var i = document.getElementById('viewer-' + p); \
               var r = i.getBoundingClientRect(); \
               return [i.naturalWidth, i.naturalHeight, r.width, r.height, r.left, r.top]; });",
            &[],
        ))
        .unwrap()
    };
    let rects = panes();
    for (plane, r) in ["axial", "sagittal", "coronal"].iter().zip(&rects) {
        if r[0] < 16.0 || (r[0], r[1]) != (r[2], r[3]) {
            c.b.fail(&format!(
                "the {plane} image is {}x{} shown at {}x{} (expected 1:1)",
                r[0], r[1], r[2], r[3]
            ));
        }
    }
    let in_panes = |shot: &support::browser::Screenshot, rects: &[Vec<f64>]| -> Vec<usize> {
        rects
            .iter()
            .map(|r| {
                let rect = (r[4] as usize, r[5] as usize, r[2] as usize, r[3] as usize);
                shot.count_in(rect, |p| colours.contains(&p))
            })
            .collect()
    };
    let shot = c.b.screenshot("viewer-overlay");
    let with_labels = in_panes(&shot, &rects);
    println!(
        "screenshot {}: SEG palette overlay pixels per pane (axial, sagittal, coronal) {:?}, \
         vertebrae {names:?}",
        shot.path.display(),
        with_labels
    );
    for (plane, n) in ["axial", "sagittal", "coronal"].iter().zip(&with_labels) {
        if *n < 30 {
            c.b.fail(&format!(
                "the {plane} pane shows {n} pixels of the SEG palette overlay (see {})",
                shot.path.display()
            ));
        }
    }

    c.b.click("#viewer-overlay");
    c.b.wait_until(
        "return ['axial','sagittal','coronal'].every(function (p) { \
           var i = document.getElementById('viewer-' + p); \
           return i.complete && i.naturalWidth > 0 && i.src.indexOf('overlay=0') > 0; });",
        &[],
        WAIT,
    );
    let plain = c.b.screenshot("viewer-no-overlay");
    let without: usize = in_panes(&plain, &panes()).iter().sum();
    let total: usize = with_labels.iter().sum();
    if without * 20 > total {
        c.b.fail(&format!(
            "{without} overlay-coloured pixels remain in the panes with labels off (were \
             {total}; see {})",
            plain.path.display()
        ));
    }
}

/// 6. The audit log lists every action above; the filter narrows it.
fn audit_log(c: &Console<'_>, pacs_port: u16, closed_port: u16) {
    c.goto("/audit");
    // Columns: #, time, actor, action, target, from, outcome.
    let rows = c.rows("#audit-events");
    let count = |actor: &str, action: &str, outcome: &str, target: &str| {
        rows.iter()
            .filter(|r| {
                r.len() == 7
                    && r[2] == actor
                    && r[3] == action
                    && r[6] == outcome
                    && r[4].contains(target)
                    && r[5] == "127.0.0.1"
            })
            .count()
    };
    let expected: [(&str, &str, &str, String, usize); 18] = [
        (ADMIN, "setup", "denied", "wrong token".into(), 1),
        (ADMIN, "setup", "success", "user ".into(), 1),
        (ADMIN, "login", "success", String::new(), 3),
        (ADMIN, "password.change", "success", String::new(), 1),
        (
            ADMIN,
            "user.create",
            "success",
            format!("{OPERATOR} (operator)"),
            1,
        ),
        (ADMIN, "logout", "success", String::new(), 2),
        (
            OPERATOR,
            "login",
            "failure",
            String::new(),
            LOCKOUT_THRESHOLD,
        ),
        (
            OPERATOR,
            "login.lockout",
            "denied",
            "locked until".into(),
            1,
        ),
        (OPERATOR, "login.locked", "denied", String::new(), 1),
        (ADMIN, "user.password_reset", "success", OPERATOR.into(), 1),
        (OPERATOR, "login", "success", String::new(), 1),
        (OPERATOR, "password.change", "success", String::new(), 1),
        (OPERATOR, "logout", "success", String::new(), 1),
        (
            ADMIN,
            "destination.create",
            "success",
            format!("PACS@127.0.0.1:{pacs_port}"),
            1,
        ),
        (
            ADMIN,
            "destination.create",
            "success",
            format!("NOBODY@127.0.0.1:{closed_port}"),
            1,
        ),
        (
            ADMIN,
            "destination.echo",
            "success",
            format!("PACS@127.0.0.1:{pacs_port}"),
            1,
        ),
        (
            ADMIN,
            "destination.echo",
            "failure",
            format!("NOBODY@127.0.0.1:{closed_port}"),
            1,
        ),
        (
            ADMIN,
            "model.upload",
            "failure",
            "refused: signature does not verify".into(),
            1,
        ),
    ];
    let missing: Vec<String> = expected
        .iter()
        .filter(|(actor, action, outcome, target, n)| count(actor, action, outcome, target) != *n)
        .map(|(actor, action, outcome, target, n)| {
            format!(
                "{actor} {action} {outcome} {target:?}: {} rows, expected {n}",
                count(actor, action, outcome, target)
            )
        })
        .collect();
    if !missing.is_empty() {
        c.b.fail(&format!(
            "audit entries wrong: {missing:#?}; all rows: {rows:#?}"
        ));
    }

    // The filter: the operator's denied events are exactly the lockout and the locked refusal.
    c.b.fill("form.filters input[name=actor]", OPERATOR);
    c.b.click("form.filters select[name=outcome] option[value=denied]");
    c.submit("form.filters button[type=submit]");
    let mut filtered: Vec<String> = c
        .rows("#audit-events")
        .into_iter()
        .map(|r| format!("{} {} {}", r[2], r[3], r[6]))
        .collect();
    filtered.sort();
    assert_eq!(
        filtered,
        [
            format!("{OPERATOR} login.locked denied"),
            format!("{OPERATOR} login.lockout denied")
        ],
        "the audit filter actor={OPERATOR}, outcome=denied"
    );
}

#[test]
fn the_real_console_in_chromium_setup_lockout_viewer_echo_bundle_refusal_and_audit() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (in_plane, slices) = phantom_size();
    let study = phantom_series_sized(dir.path(), 11, in_plane, slices);
    let pacs_dir = dir.path().join("pacs");
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let (_pacs, pacs_port) = pacs(&pacs_dir);
    let database = format!("sqlite://{}/console.db", dir.path().display());
    let (_daemon, dicom_port, web) = start_daemon_console(dir.path(), &database, WEB_TABLE);
    let log = dir.path().join("vertebrad.log");
    let _keep_log = KeepLogOnFailure(log.clone());
    let state = dir.path().join("state");
    // Sent now: the analysis runs while the account flows do.
    let sender = std::thread::spawn(move || send(dicom_port, &study));

    let spki = spki_sha256_base64(&state.join("web-tls/cert.pem"));
    let browser = Browser::start_trusting("console", &spki);
    let c = Console {
        b: &browser,
        base: format!("https://127.0.0.1:{}", web.port()),
    };
    let mut t = Instant::now();
    let mut lap = |what: &str| {
        println!("{what}: {:.1} s", t.elapsed().as_secs_f64());
        t = Instant::now();
    };
    first_run_setup(&c, &state);
    lap("first-run setup and forced password change");
    login_logout_lockout(&c);
    lap("user, logout, lockout, reset");
    let closed_port = destinations_and_echo(&c, pacs_port);
    lap("destinations and C-ECHO");
    bundle_refusal(&c, dir.path(), &state);
    lap("bundle refusal");
    sender.join().expect("storescu sent the phantom");
    series_and_viewer(&c, &log);
    lap("series list and result viewer");
    audit_log(&c, pacs_port, closed_port);
    lap("audit log");
    println!(
        "console browser test: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
