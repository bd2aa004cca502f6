//! The dashboard: service health, queue depth by state, throughput and turnaround over the
//! last hour and day (SVG plots rendered here, no script), spool disk use vs its high-water
//! mark.

use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::layout;
use crate::store::FinishedJob;
use crate::web::AppState;
use crate::web::auth::CurrentUser;
use crate::web::status::{EngineStatus, disk_use};

/// Plot geometry (SVG user units).
const W: f64 = 480.0;
const H: f64 = 160.0;
const PAD: f64 = 28.0;

/// Finished jobs counted per bucket, and the median turnaround (s) of each bucket.
pub fn buckets(
    jobs: &[FinishedJob],
    start_ms: i64,
    bucket_ms: i64,
    n: usize,
) -> Vec<(u32, Option<f64>)> {
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); n];
    for j in jobs {
        let k = (j.finished_at_ms - start_ms).div_euclid(bucket_ms);
        if let Ok(k) = usize::try_from(k)
            && k < n
        {
            per[k].push((j.finished_at_ms - j.last_received_at_ms).max(0) as f64 / 1000.0);
        }
    }
    per.into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            let median = (!v.is_empty()).then(|| v[v.len() / 2]);
            (v.len() as u32, median)
        })
        .collect()
}

/// A bar (count) + line (median turnaround) plot of `data`, labelled `first`/`last` below.
pub fn plot(title: &str, data: &[(u32, Option<f64>)], first: &str, last: &str) -> Markup {
    let max_n = data.iter().map(|d| d.0).max().unwrap_or(0).max(1) as f64;
    let max_t = data
        .iter()
        .filter_map(|d| d.1)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let n = data.len().max(1) as f64;
    let bw = (W - 2.0 * PAD) / n;
    let points: Vec<String> = data
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            d.1.map(|t| {
                format!(
                    "{:.1},{:.1}",
                    PAD + bw * (i as f64 + 0.5),
                    H - PAD - (H - 2.0 * PAD) * t / max_t
                )
            })
        })
        .collect();
    html! {
        svg.plot viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(title) {
            title { (title) }
            line.axis x1=(PAD) y1=(H - PAD) x2=(W - PAD) y2=(H - PAD) {}
            @for (i, d) in data.iter().enumerate() {
                @if d.0 > 0 {
                    @let h = (H - 2.0 * PAD) * f64::from(d.0) / max_n;
                    rect.bar x=(format!("{:.1}", PAD + bw * i as f64 + 1.0)) y=(format!("{:.1}", H - PAD - h))
                        width=(format!("{:.1}", (bw - 2.0).max(1.0))) height=(format!("{h:.1}")) {
                        title { (d.0) " series" }
                    }
                }
            }
            @if points.len() > 1 {
                polyline.line points=(points.join(" ")) {}
            }
            text x=(PAD) y=(H - 8.0) { (first) }
            text x=(W - PAD) y=(H - 8.0) text-anchor="end" { (last) }
            text x=(PAD) y="14" { "bars: series done (max " (max_n as u32) ")" }
            text x=(W - PAD) y="14" text-anchor="end" { "line: median turnaround (max " (format!("{max_t:.0}")) " s)" }
        }
    }
}

/// `GET /`.
pub async fn page(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
) -> Response {
    let snap = state.status.snapshot();
    let store_ok = state.store.ping().await.is_ok();
    let counts = match state.store.job_counts().await {
        Ok(c) => c,
        Err(e) => return super::store_error(&e),
    };
    let deliveries = state.store.delivery_counts().await.unwrap_or_default();
    let now = state.store.now();
    let day_start = now - 24 * 3_600_000;
    let jobs = match state.store.finished_jobs_since(day_start).await {
        Ok(j) => j,
        Err(e) => return super::store_error(&e),
    };
    let hour = buckets(&jobs, now - 3_600_000, 5 * 60_000, 12);
    let day = buckets(&jobs, day_start, 3_600_000, 24);
    let disk = snap.spool_dir.as_deref().and_then(disk_use);
    let body = html! {
        h1 { "Dashboard" }
        div.cards {
            div.card {
                h2 { "Services" }
                table {
                    tr { th { "DICOM listener" } td {
                        @match &snap.dicom {
                            Some(d) => { span.ok { "up" } " " (d.ae_title) " on " (d.addr)
                                @if let Some(p) = d.tls_port { ", TLS port " (p) } }
                            None => span.bad { "not running" },
                        }
                    } }
                    tr { th { "Store" } td { @if store_ok { span.ok { "reachable" } " (" (format!("{:?}", state.store.backend())) ")" } @else { span.bad { "unreachable" } } } }
                    tr { th { "Inference engine" } td {
                        @match &snap.engine {
                            EngineStatus::Loading => span.warn { "loading" },
                            EngineStatus::Loaded(e) => { span.ok { "loaded" } " " (e.model_name) ", provider " strong { (e.provider) }
                                @if e.demo { " " span.warn { "(DEMO model: not for patient care)" } } }
                            EngineStatus::Unavailable(why) => { span.bad { "unavailable" } ": " (why) }
                        }
                    } }
                    tr { th { "GPU" } td { @match &snap.gpu { Some(g) => (g), None => span.muted { "none detected" } } } }
                }
            }
            div.card {
                h2 { "Queue" }
                table {
                    @for (s, n) in &counts { tr { th { (s.as_str()) } td.num { (n) } } }
                }
                h2 { "Deliveries" }
                table {
                    @for (s, n) in &deliveries { tr { th { (s) } td.num { (n) } } }
                    @if deliveries.is_empty() { tr { td.muted { "none yet" } } }
                }
            }
            div.card {
                h2 { "Spool disk" }
                @match disk {
                    Some((used, total)) => {
                        @let pct = if total > 0 { used as f64 * 100.0 / total as f64 } else { 0.0 };
                        p { (super::bytes(used)) " of " (super::bytes(total)) " used (" (format!("{pct:.1}")) " %); high-water mark "
                            (format!("{:.0}", snap.spool_high_water_percent)) " %" }
                        meter.meter min="0" max="100" value=(format!("{pct:.1}")) high=(format!("{:.0}", snap.spool_high_water_percent * 0.9)) optimum="0" {}
                        @if pct >= snap.spool_high_water_percent { div.banner.error { "Above the high-water mark: new images are refused." } }
                    }
                    None => p.muted { "unknown" },
                }
            }
        }
        h2 { "Last hour (5-minute bins)" }
        (plot("Throughput and turnaround, last hour", &hour, "-60 min", "now"))
        h2 { "Last day (1-hour bins)" }
        (plot("Throughput and turnaround, last day", &day, "-24 h", "now"))
    };
    layout("Dashboard", Some(&user), &body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_and_take_the_median_turnaround() {
        let jobs = [
            FinishedJob {
                finished_at_ms: 1_000,
                last_received_at_ms: 0,
            },
            FinishedJob {
                finished_at_ms: 1_500,
                last_received_at_ms: 500,
            },
            FinishedJob {
                finished_at_ms: 1_900,
                last_received_at_ms: 0,
            },
            FinishedJob {
                finished_at_ms: 5_000,
                last_received_at_ms: 2_000,
            },
            FinishedJob {
                finished_at_ms: 99_000,
                last_received_at_ms: 0,
            },
        ];
        let b = buckets(&jobs, 0, 1_000, 6);
        assert_eq!(b[0], (0, None));
        assert_eq!(b[1], (3, Some(1.0)));
        assert_eq!(b[5], (1, Some(3.0)));
        let svg = plot("t", &b, "a", "b").into_string();
        assert!(svg.contains("<rect"), "{svg}");
        assert!(!svg.contains("style="), "no inline style: {svg}");
    }
}
