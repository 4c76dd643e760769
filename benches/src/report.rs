//! Results as a table, a JSON document and an SVG chart.

use std::fmt::Write as _;

use crate::load::LoadResult;

/// One scenario against one target: its closed-loop throughput run and its
/// open-loop latency run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub scenario: String,
    pub target: String,
    pub throughput: LoadResult,
    pub latency: LoadResult,
    /// Requests that reached the upstream during the throughput run.
    pub upstream_requests: Option<u64>,
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<15} {:<16} {:>10} {:>9} {:>9} {:>9} {:>8} {:>9} {:>7}",
        "scenario", "target", "req/s", "p50 µs", "p99 µs", "p99.9 µs", "errors", "upstream", "non-2xx"
    );
    for r in rows {
        let non_2xx: u64 = r.throughput.status_classes[1..].iter().sum();
        let _ = writeln!(
            out,
            "{:<15} {:<16} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>8} {:>9} {:>7}",
            r.scenario,
            r.target,
            r.throughput.throughput,
            r.latency.p50_us,
            r.latency.p99_us,
            r.latency.p999_us,
            r.throughput.errors + r.latency.errors,
            r.upstream_requests.map_or("-".to_string(), |n| n.to_string()),
            non_2xx,
        );
    }
    out
}

/// Two horizontal bar panels: throughput, and p50/p99 latency (log scale).
pub fn svg(rows: &[Row], title: &str) -> String {
    let (width, bar, gap, label_w) = (900.0, 16.0, 10.0, 260.0);
    let panel_h = rows.len() as f64 * (bar * 2.0 + gap) + 40.0;
    let height = panel_h * 2.0 + 60.0;
    let plot_w = width - label_w - 80.0;
    let max_tp = rows.iter().map(|r| r.throughput.throughput).fold(1.0, f64::max);
    let max_lat = rows.iter().map(|r| r.latency.p99_us).fold(10.0, f64::max);
    let log = |v: f64| (v.max(1.0)).log10() / max_lat.log10();
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let panels: [(&str, f64); 2] = [
        ("throughput, requests/s (closed loop)", 40.0),
        (
            "latency µs, p50 (dark) and p99 (light), log scale (open loop)",
            40.0 + panel_h,
        ),
    ];
    for (p, (heading, top)) in panels.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}" font-weight="bold">{heading}</text>"#,
            top + 14.0
        );
        for (i, r) in rows.iter().enumerate() {
            let y = top + 24.0 + i as f64 * (bar * 2.0 + gap);
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{} · {}</text>"#,
                label_w - 8.0,
                y + bar + 4.0,
                escape(&r.scenario),
                escape(&r.target)
            );
            if p == 0 {
                let w = plot_w * r.throughput.throughput / max_tp;
                let _ = writeln!(
                    s,
                    r##"<rect x="{label_w}" y="{}" width="{w:.1}" height="{}" fill="#3b6ea8"/><text x="{}" y="{}">{:.0}</text>"##,
                    y + bar / 2.0,
                    bar,
                    label_w + w + 4.0,
                    y + bar + 4.0,
                    r.throughput.throughput
                );
            } else {
                for (k, (value, colour)) in [(r.latency.p50_us, "#2a7f62"), (r.latency.p99_us, "#9fd3bf")]
                    .iter()
                    .enumerate()
                {
                    let w = plot_w * log(*value);
                    let yy = y + k as f64 * bar;
                    let _ = writeln!(
                        s,
                        r#"<rect x="{label_w}" y="{yy}" width="{w:.1}" height="{}" fill="{colour}"/><text x="{}" y="{}">{value:.0}</text>"#,
                        bar - 2.0,
                        label_w + w + 4.0,
                        yy + bar - 4.0
                    );
                }
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
