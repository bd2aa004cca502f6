//! The browser-test harness (`support/browser.rs`) proven on the result viewer: a tiny HTTP
//! server in this test serves `appliance/web/static/viewer.js` + `viewer.css`, a page with the
//! documented skeleton (docs/viewer.md) under a strict Content-Security-Policy, and a phantom
//! rendered through `vertebrad::viewer`; headless Chromium loads it, the test waits until the
//! three panes have painted, takes a screenshot (kept as a CI artifact), checks that pixels of
//! the SEG palette colours blended over the CT are on screen and disappear when the label
//! toggle is switched off, that a vertebra row jumps the panes to its slices, that no CSP
//! violation was reported, and prints the time to first paint.
//!
//! Needs Debian's `chromium` and `chromium-driver` (fails with the install command otherwise).

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;
use support::browser::{Browser, WAIT};
use vertebra_core::anatomy::Vertebra;
use vertebra_core::phantom::{self, LesionPlan, PhantomSpec, domain};
use vertebra_reports::keyimage::LABEL_ALPHA;
use vertebra_reports::palette;
use vertebrad::engine::document::{LesionResult, VertebraResult};
use vertebrad::viewer::{Plane, ViewerInfo, ViewerVolume, Window, render_slice};

/// The console path the page is served under (as the console routes it).
const BASE: &str = "/series/1/viewer";

/// The strict policy of the console: nothing inline, everything from the origin.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
                   report-uri /csp-report";

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Result viewer</title>
<link rel="stylesheet" href="/static/viewer.css"></head>
<body><main><h1>Result viewer</h1>
<section id="viewer" class="viewer" data-base="/series/1/viewer"></section>
</main><script src="/static/viewer.js"></script></body></html>"#;

fn static_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web/static")
}

/// A T12–L2 phantom at 160² (0.7 mm, 1.25 mm slices) with its truth as findings; for the
/// time-to-first-paint benchmark `VERTEBRA_VIEWER_PHANTOM=IN_PLANE,SLICES` (e.g. `512,300`)
/// makes it larger (docs/benchmarks.md).
fn volume() -> ViewerVolume {
    let size = std::env::var("VERTEBRA_VIEWER_PHANTOM").unwrap_or_else(|_| "160".into());
    let mut size = size.split(',').map(|v| {
        v.trim()
            .parse::<usize>()
            .expect("VERTEBRA_VIEWER_PHANTOM is IN_PLANE[,SLICES]")
    });
    let mut spec = PhantomSpec::new(
        21,
        Vertebra::T12,
        Vertebra::L2,
        domain::preset("ct-standard").unwrap(),
    );
    spec.in_plane = size.next().unwrap_or(160);
    spec.slices = size.next();
    spec.lesions = LesionPlan::Random { rate: 1.0 };
    let p = phantom::generate(&spec).unwrap();
    let vertebrae = p
        .centroids
        .iter()
        .map(|c| VertebraResult {
            name: c.vertebra.name().into(),
            label: c.vertebra.label(),
            confidence: 1.0,
            raw_name: c.vertebra.name().into(),
            raw_probability: 1.0,
            volume_mm3: c.voxels as f64 * p.labels.geometry().voxel_volume_mm3(),
            centroid_lps_mm: c.world,
            core_mean_hu: None,
            heights: None,
            height_loss: None,
            genant_grade: None,
            touches_border: false,
            mean_hu: None,
            bbox_source_voxels: None,
        })
        .collect();
    let lesions = p
        .lesions
        .iter()
        .map(|l| LesionResult {
            class: l.class.key().into(),
            score: 1.0,
            centre_lps_mm: l.centre,
            size_mm: l.size_mm,
            vertebra: Some(l.vertebra.name().into()),
            vertebra_distance_mm: 0.0,
        })
        .collect();
    ViewerVolume::new(&p.ct, &p.labels, None, vertebrae, lesions).unwrap()
}

/// What the server answered, for the assertions.
#[derive(Default)]
struct Served {
    slices: AtomicUsize,
    csp_reports: Mutex<Vec<String>>,
}

fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: {CSP}\r\nX-Content-Type-Options: nosniff\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// Answers one request: the page, the static files, info.json, slice PNGs, CSP reports.
fn handle(mut stream: TcpStream, volume: &ViewerVolume, info: &[u8], served: &Served) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method == "POST" && path == "/csp-report" {
        let mut body = vec![0; length];
        let _ = std::io::Read::read_exact(&mut reader, &mut body);
        served
            .csp_reports
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&body).into_owned());
        respond(&mut stream, "204 No Content", "text/plain", b"");
        return;
    }
    match path {
        "/viewer" => respond(
            &mut stream,
            "200 OK",
            "text/html; charset=utf-8",
            PAGE.as_bytes(),
        ),
        "/static/viewer.js" | "/static/viewer.css" => {
            let name = &path["/static/".len()..];
            let body = std::fs::read(static_dir().join(name)).unwrap();
            let kind = if name == "viewer.js" {
                "text/javascript; charset=utf-8"
            } else {
                "text/css; charset=utf-8"
            };
            respond(&mut stream, "200 OK", kind, &body);
        }
        p if p == format!("{BASE}/info.json") => {
            respond(&mut stream, "200 OK", "application/json", info);
        }
        p if p.starts_with(&format!("{BASE}/slice/")) => {
            let rest = &p[BASE.len() + "/slice/".len()..];
            let answer = rest.split_once('/').and_then(|(plane, file)| {
                let index = file.strip_suffix(".png")?.parse::<usize>().ok()?;
                let plane = plane.parse::<Plane>().ok()?;
                let param = |k: &str| {
                    query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                };
                let window = Window::preset(param("window").unwrap_or("bone")).ok()?;
                let overlay = param("overlay") == Some("1");
                let heatmap = param("heatmap") == Some("1");
                render_slice(volume, plane, index, window, overlay, heatmap).ok()
            });
            match answer {
                Some(png) => {
                    served.slices.fetch_add(1, Ordering::SeqCst);
                    respond(&mut stream, "200 OK", "image/png", &png);
                }
                None => respond(&mut stream, "404 Not Found", "text/plain", b"no such slice"),
            }
        }
        _ => respond(&mut stream, "404 Not Found", "text/plain", b"not found"),
    }
}

/// Serves on a free loopback port until the test process ends; returns the origin.
fn serve(volume: Arc<ViewerVolume>, served: Arc<Served>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let info = Arc::new(ViewerInfo::of(&volume).to_json());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (volume, info, served) =
                (Arc::clone(&volume), Arc::clone(&info), Arc::clone(&served));
            std::thread::spawn(move || handle(stream, &volume, &info, &served));
        }
    });
    origin
}

/// Every colour a label pixel can have: each palette colour blended over each grey.
fn overlay_colours(volume: &ViewerVolume) -> HashSet<[u8; 3]> {
    let mut set = HashSet::new();
    for v in volume.vertebrae() {
        let c = palette::vertebra_rgb(Vertebra::from_label(v.label).unwrap());
        for g in 0..=255u8 {
            set.insert(std::array::from_fn(|i| {
                (LABEL_ALPHA * f64::from(c[i]) + (1.0 - LABEL_ALPHA) * f64::from(g))
                    .round()
                    .clamp(0.0, 255.0) as u8
            }));
        }
    }
    // A grey blended with a colour is never grey unless the colour is; drop greys so that CT
    // pixels cannot count.
    set.retain(|c| !(c[0] == c[1] && c[1] == c[2]));
    set
}

#[test]
fn the_viewer_paints_three_panes_with_the_palette_overlay_in_chromium() {
    let t = Instant::now();
    let volume = Arc::new(volume());
    println!(
        "phantom {:?} built in {:.1} s (not part of the paint time)",
        volume.dims(),
        t.elapsed().as_secs_f64()
    );
    let served = Arc::new(Served::default());
    let origin = serve(Arc::clone(&volume), Arc::clone(&served));
    let browser = Browser::start("viewer");

    let started = Instant::now();
    browser.goto(&format!("{origin}/viewer"));
    let first_paint_ms = browser.wait_until(
        "return window.vertebraViewer ? window.vertebraViewer.firstPaintMs : null;",
        &[],
        WAIT,
    );
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mark = browser.execute(
        "var m = performance.getEntriesByName('vertebra-viewer-first-paint'); \
         return m.length ? m[0].startTime : null;",
        &[],
    );
    println!(
        "time to first paint of the viewer (3 panes, {:?} voxels): {:.0} ms after navigation \
         start (Performance mark {mark}); {wall_ms:.0} ms from the WebDriver navigate call",
        volume.dims(),
        first_paint_ms.as_f64().unwrap()
    );
    assert_eq!(
        browser.execute(
            "return document.getElementById('viewer').dataset.state;",
            &[]
        ),
        json!("ready")
    );
    // Each image shows at its natural size (1:1 pixels, so the palette colours are exact).
    let sizes = browser.execute(
        "return ['axial','sagittal','coronal'].map(function (p) { \
           var i = document.getElementById('viewer-' + p); \
           var r = i.getBoundingClientRect(); \
           return [i.naturalWidth, i.naturalHeight, r.width, r.height, r.left, r.top]; });",
        &[],
    );
    let info = ViewerInfo::of(&volume);
    for (s, plane) in sizes.as_array().unwrap().iter().zip(&info.planes) {
        let s: Vec<f64> = s
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(
            (s[0] as usize, s[1] as usize),
            (plane.width, plane.height),
            "{plane:?}"
        );
        assert_eq!(
            (s[2], s[3]),
            (s[0], s[1]),
            "{plane:?} is scaled on the page"
        );
    }
    assert!(served.slices.load(Ordering::SeqCst) >= 3);

    let shot = browser.screenshot("overlay");
    let colours = overlay_colours(&volume);
    let overlay_pixels = shot.count(|p| colours.contains(&p));
    println!(
        "screenshot {} ({}x{}): {overlay_pixels} pixels of blended SEG palette colours",
        shot.path.display(),
        shot.width,
        shot.height
    );
    assert!(
        overlay_pixels > 500,
        "only {overlay_pixels} overlay pixels on screen (see {})",
        shot.path.display()
    );
    // Inside each pane's image too, not just somewhere (e.g. table swatches).
    for (s, plane) in sizes.as_array().unwrap().iter().zip(&info.planes) {
        let r: Vec<usize> = s
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as usize)
            .collect();
        let n = shot.count_in((r[4], r[5], r[2], r[3]), |p| colours.contains(&p));
        assert!(n > 50, "{:?} pane shows {n} overlay pixels", plane.plane);
    }

    // Labels off: the overlay colours leave the images.
    browser.click("#viewer-overlay");
    browser.wait_until(
        "return ['axial','sagittal','coronal'].every(function (p) { \
           var i = document.getElementById('viewer-' + p); \
           return i.complete && i.src.indexOf('overlay=0') > 0; });",
        &[],
        WAIT,
    );
    let plain = browser.screenshot("no-overlay");
    let left = plain.count(|p| colours.contains(&p));
    assert!(
        left * 20 < overlay_pixels,
        "{left} overlay-coloured pixels remain with labels off (were {overlay_pixels})"
    );

    // A vertebra row jumps the panes to its slices.
    let row = &info.vertebrae[info.vertebrae.len() / 2];
    browser.click(&format!("#viewer-vertebrae tr[data-name='{}']", row.name));
    let values = browser.wait_until(
        "var v = ['axial','sagittal','coronal'].map(function (p) { \
           return Number(document.getElementById('viewer-' + p + '-slice').value); }); \
         return v.join(',') === arguments[0] ? v : null;",
        &[json!(format!(
            "{},{},{}",
            row.slices.axial, row.slices.sagittal, row.slices.coronal
        ))],
        WAIT,
    );
    assert_eq!(
        values,
        json!([row.slices.axial, row.slices.sagittal, row.slices.coronal])
    );
    browser.wait_until(
        "return document.getElementById('viewer-axial').src.indexOf('/slice/axial/' + arguments[0] + '.png') > 0 \
           && document.getElementById('viewer-axial').complete;",
        &[json!(row.slices.axial)],
        WAIT,
    );
    assert!(browser.text("#viewer-lesions").contains("Score"));

    // The strict CSP held: give Chromium a moment to post any report.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let reports = served.csp_reports.lock().unwrap().clone();
    assert!(reports.is_empty(), "CSP violations: {reports:?}");
}
