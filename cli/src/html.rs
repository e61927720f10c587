//! Self-contained HTML report pages: inline CSS and SVG charts, no external resource, so a page
//! opens in any browser and survives being attached to an email.

use std::fmt::Write as _;

use puce_core::report::{DedupReport, GrowthReport, RetentionReport};

use crate::output;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLORS: [&str; 8] = [
    "#3b6fb6", "#e07b39", "#5aa469", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c",
];

/// A horizontal bar chart: one row per (label, [(series value)]), stacked.
fn hbars(id: &str, title: &str, series: &[&str], rows: &[(String, Vec<u64>)]) -> String {
    let max = rows
        .iter()
        .map(|(_, v)| v.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, label_w, bar_h, gap) = (760.0, 220.0, 22.0, 8.0);
    let h = 40.0 + rows.len() as f64 * (bar_h + gap) + 30.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<figure><figcaption>{}</figcaption><svg class="chart" id="{id}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    for (i, name) in series.iter().enumerate() {
        let x = label_w + i as f64 * 170.0;
        let _ = write!(
            s,
            r#"<rect x="{x}" y="6" width="12" height="12" fill="{}"/><text x="{}" y="16" class="legend">{}</text>"#,
            COLORS[i % COLORS.len()],
            x + 16.0,
            esc(name)
        );
    }
    for (r, (label, values)) in rows.iter().enumerate() {
        let y = 30.0 + r as f64 * (bar_h + gap);
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="label" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + bar_h * 0.7,
            esc(label)
        );
        let mut x = label_w;
        for (i, v) in values.iter().enumerate() {
            let bw = (*v as f64 / max as f64) * (w - label_w - 110.0);
            let _ = write!(
                s,
                r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{bar_h}" fill="{}"><title>{}: {}</title></rect>"#,
                COLORS[i % COLORS.len()],
                esc(series.get(i).copied().unwrap_or("")),
                output::size(*v)
            );
            x += bw;
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" class="value">{}</text>"#,
            x + 6.0,
            y + bar_h * 0.7,
            output::size(values.iter().sum())
        );
    }
    s.push_str("</svg></figure>");
    s
}

/// The opening of a line chart of sizes, `w` by `h` with margins `l` and `r`: the caption, the
/// svg element and five grid lines labelled from 0 to `max`, placed by `y`.
fn chart_open(
    id: &str,
    title: &str,
    (w, h, l, r): (f64, f64, f64, f64),
    max: f64,
    y: impl Fn(f64) -> f64,
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<figure><figcaption>{}</figcaption><svg class="chart" id="{id}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" class="label" text-anchor="end">{}</text>"##,
            w - r,
            l - 6.0,
            y(v) + 4.0,
            output::size(v as u64),
            yy = y(v)
        );
    }
    s
}

/// A line chart of cumulative values over labelled points, with stacked daily bars beneath.
fn growth_chart(id: &str, title: &str, g: &GrowthReport) -> String {
    let (w, h, l, r, t, b) = (760.0, 320.0, 80.0, 20.0, 30.0, 50.0);
    let n = g.days.len().max(1);
    let max = g.days.iter().map(|d| d.total).max().unwrap_or(0).max(1) as f64;
    let x = |i: usize| {
        l + (w - l - r)
            * if n == 1 {
                0.5
            } else {
                i as f64 / (n - 1) as f64
            }
    };
    let y = |v: f64| t + (h - t - b) * (1.0 - v / max);
    let mut s = chart_open(id, title, (w, h, l, r), max, y);
    let spaces: Vec<&String> = {
        let mut v: Vec<&String> = g.days.iter().flat_map(|d| d.added.keys()).collect();
        v.sort();
        v.dedup();
        v
    };
    let bw = ((w - l - r) / n as f64 * 0.5).clamp(2.0, 30.0);
    for (i, d) in g.days.iter().enumerate() {
        let mut base = 0.0;
        for (k, sp) in spaces.iter().enumerate() {
            let v = d.added.get(*sp).copied().unwrap_or(0) as f64;
            if v <= 0.0 {
                continue;
            }
            let (y0, y1) = (y(base), y(base + v));
            let _ = write!(
                s,
                r#"<rect class="bar" x="{:.1}" y="{y1:.1}" width="{bw:.1}" height="{:.1}" fill="{}" opacity="0.6"><title>{} {}: +{}</title></rect>"#,
                x(i) - bw / 2.0,
                (y0 - y1).max(0.5),
                COLORS[k % COLORS.len()],
                esc(&d.day),
                esc(sp),
                output::size(v as u64)
            );
            base += v;
        }
    }
    let pts: Vec<String> = g
        .days
        .iter()
        .enumerate()
        .map(|(i, d)| format!("{:.1},{:.1}", x(i), y(d.total as f64)))
        .collect();
    let _ = write!(
        s,
        r##"<polyline class="line" points="{}" fill="none" stroke="#222" stroke-width="2"/>"##,
        pts.join(" ")
    );
    for (i, d) in g.days.iter().enumerate() {
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#222"><title>{}: {}</title></circle>"##,
            x(i),
            y(d.total as f64),
            esc(&d.day),
            output::size(d.total)
        );
        if n <= 16 || i % (n / 8).max(1) == 0 {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" class="label" text-anchor="middle">{}</text>"#,
                x(i),
                h - b + 18.0,
                esc(d.day.get(5..).unwrap_or(&d.day))
            );
        }
    }
    for (k, sp) in spaces.iter().enumerate() {
        let lx = l + k as f64 * 150.0;
        let _ = write!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{}" opacity="0.6"/><text x="{}" y="{}" class="legend">{} (added)</text>"#,
            h - 18.0,
            COLORS[k % COLORS.len()],
            lx + 16.0,
            h - 8.0,
            esc(sp)
        );
    }
    s.push_str("</svg></figure>");
    s
}

fn table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut s = String::from("<table><thead><tr>");
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{}</td>", esc(&c));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// A section of a page of tables ([`tables_page`]): a heading, a status line (green when `ok`,
/// red when not), a table.
pub struct Section {
    pub heading: String,
    pub status: String,
    pub ok: Option<bool>,
    pub head: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

/// A page of tables without charts (`report replicas --html`).
pub fn tables_page(title: &str, generated: &str, sections: &[Section]) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>{}</h1><p class=\"meta\">Generated {} by puce.</p>",
        esc(title),
        esc(generated)
    );
    for sec in sections {
        let color = match sec.ok {
            Some(true) => "#2e7d32",
            Some(false) => "#c62828",
            None => "#555",
        };
        let _ = write!(
            body,
            "<h2>{}</h2><p style=\"color:{color};font-weight:bold\">{}</p>",
            esc(&sec.heading),
            esc(&sec.status)
        );
        body.push_str(&table(&sec.head, sec.rows.clone()));
    }
    document(title, &body)
}

/// Lines over time: one per series, at the points' times (`t`, ns), values in bytes.
fn time_lines(id: &str, title: &str, times: &[i64], series: &[(String, Vec<u64>)]) -> String {
    let (w, h, l, r, t, b) = (760.0, 320.0, 80.0, 20.0, 30.0, 50.0);
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (t0, t1) = (
        times.first().copied().unwrap_or(0),
        times.last().copied().unwrap_or(0),
    );
    let span = (t1 - t0).max(1) as f64;
    let x = |ns: i64| {
        l + (w - l - r)
            * if t1 == t0 {
                0.5
            } else {
                (ns - t0) as f64 / span
            }
    };
    let y = |v: f64| t + (h - t - b) * (1.0 - v / max);
    let mut s = chart_open(id, title, (w, h, l, r), max, y);
    for (k, (name, values)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let pts: Vec<String> = times
            .iter()
            .zip(values)
            .map(|(ns, v)| format!("{:.1},{:.1}", x(*ns), y(*v as f64)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="line" points="{}" fill="none" stroke="{color}" stroke-width="2"><title>{}</title></polyline>"#,
            pts.join(" "),
            esc(name)
        );
        let lx = l + k as f64 * 200.0;
        let _ = write!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{}" class="legend">{}</text>"#,
            h - 18.0,
            lx + 16.0,
            h - 8.0,
            esc(name)
        );
    }
    for ns in [t0, t1] {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" class="label" text-anchor="middle">{}</text>"#,
            x(ns),
            h - b + 18.0,
            esc(&output::time(ns))
        );
    }
    s.push_str("</svg></figure>");
    s
}

/// `report peers --html`: per peer, a chart of what this node holds for it and what it holds
/// for this node over the recorded `history` (`{"t", "peers": {name: [for, by]}}` points), then
/// the table of the current figures.
pub fn peers_page(
    title: &str,
    generated: &str,
    history: &[serde_json::Value],
    rows: &[Vec<String>],
) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>{}</h1><p class=\"meta\">Generated {} by puce.</p>",
        esc(title),
        esc(generated)
    );
    body.push_str(&table(
        &[
            "peer",
            "I hold for it",
            "only its data",
            "fair share",
            "quota use",
            "it holds for me",
            "as of",
        ],
        rows.to_vec(),
    ));
    let times: Vec<i64> = history.iter().filter_map(|p| p["t"].as_i64()).collect();
    for (i, row) in rows.iter().enumerate() {
        let name = &row[0];
        let pick = |k: usize| -> Vec<u64> {
            history
                .iter()
                .filter(|p| p["t"].is_i64())
                .map(|p| p["peers"][name.as_str()][k].as_u64().unwrap_or(0))
                .collect()
        };
        body.push_str(&time_lines(
            &format!("peer-{i}"),
            &format!("{name}: stored bytes over time"),
            &times,
            &[
                (format!("I hold for {name}"), pick(0)),
                (format!("{name} holds for me"), pick(1)),
            ],
        ));
    }
    document(title, &body)
}

/// The whole page: the three charts every report carries, then the report's own tables.
pub fn page(
    title: &str,
    dedup: &DedupReport,
    growth: &GrowthReport,
    retention: Option<&RetentionReport>,
    generated: &str,
) -> String {
    let mut body = summary(title, dedup, generated);
    body.push_str(&charts(dedup, growth));
    if let Some(r) = retention {
        body.push_str(&retention_section(r));
    }
    body.push_str(&dedup_tables(dedup));
    document(title, &body)
}

/// The title and the summary line.
fn summary(title: &str, dedup: &DedupReport, generated: &str) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>{}</h1><p class=\"meta\">Generated {} by puce. Logical {} in {} snapshots, stored {} \
         (dedup {:.2}x, compression {:.2}x, overall {:.2}x); packs {}.</p>",
        esc(title),
        esc(generated),
        output::size(dedup.logical_bytes),
        dedup.snapshots.len(),
        output::size(dedup.stored_bytes),
        dedup.dedup_ratio,
        dedup.compression_ratio,
        dedup.total_ratio,
        output::size(dedup.pack_bytes)
    );
    body
}

/// The three charts: growth over time, space per space, dedup savings.
fn charts(dedup: &DedupReport, growth: &GrowthReport) -> String {
    let mut body = String::new();
    let proj = match (&growth.full_on, growth.days_to_full) {
        (Some(date), Some(d)) => format!(
            "At {} per day, the {} free on the disk last {:.0} days (until {}).",
            output::size(growth.bytes_per_day as u64),
            output::size(growth.disk_free_bytes),
            d,
            date
        ),
        _ => format!(
            "The repository is not growing; {} free on the disk.",
            output::size(growth.disk_free_bytes)
        ),
    };
    let _ = write!(body, "<h2>Growth over time</h2><p>{}</p>", esc(&proj));
    body.push_str(&growth_chart(
        "chart-growth",
        "Stored bytes over time (line: total; bars: added per day and space)",
        growth,
    ));
    body.push_str("<h2>Space per space</h2>");
    let rows: Vec<(String, Vec<u64>)> = dedup
        .spaces
        .iter()
        .map(|s| {
            (
                s.space.clone(),
                vec![
                    s.unique_bytes,
                    s.stored_bytes.saturating_sub(s.unique_bytes),
                ],
            )
        })
        .collect();
    body.push_str(&hbars(
        "chart-spaces",
        "Stored bytes per space",
        &["only this space", "shared with other spaces"],
        &rows,
    ));
    body.push_str("<h2>Dedup savings</h2>");
    body.push_str(&hbars(
        "chart-savings",
        "What the snapshots hold, and what is stored",
        &["bytes"],
        &[
            ("logical (all snapshots)".into(), vec![dedup.logical_bytes]),
            ("after dedup".into(), vec![dedup.unique_bytes]),
            ("stored (compressed)".into(), vec![dedup.stored_bytes]),
        ],
    ));
    body
}

/// What a retention policy removes and keeps, and why.
fn retention_section(r: &RetentionReport) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h2>Retention</h2><p>The policy removes {} snapshots and keeps {}; gc then frees {} \
             of {}.</p>",
        r.removed,
        r.kept,
        output::size(r.freed_bytes),
        output::size(r.stored_bytes)
    );
    body.push_str(&table(
        &["Snapshot", "Time", "Space", "Decision", "Reasons"],
        r.decisions
            .iter()
            .map(|d| {
                vec![
                    d.id.short(8),
                    output::time(d.time_ns),
                    d.space.clone(),
                    if d.keep { "keep" } else { "remove" }.into(),
                    d.reasons.join(", "),
                ]
            })
            .collect(),
    ));
    body
}

/// The tables of the dedup report: spaces, snapshots, largest folders, duplicated files.
fn dedup_tables(dedup: &DedupReport) -> String {
    let mut body = String::new();
    body.push_str("<h2>Spaces</h2>");
    body.push_str(&table(
        &[
            "Space",
            "Snapshots",
            "Latest size",
            "Stored",
            "Only this space",
        ],
        dedup
            .spaces
            .iter()
            .map(|s| {
                vec![
                    s.space.clone(),
                    s.snapshots.to_string(),
                    output::size(s.latest_bytes),
                    output::size(s.stored_bytes),
                    output::size(s.unique_bytes),
                ]
            })
            .collect(),
    ));
    body.push_str("<h2>Snapshots</h2>");
    body.push_str(&table(
        &[
            "Snapshot",
            "Time",
            "Space",
            "Size",
            "Added",
            "Only it holds",
        ],
        dedup
            .snapshots
            .iter()
            .map(|s| {
                vec![
                    s.id[..8].to_string(),
                    output::time(s.time_ns),
                    s.space.clone(),
                    output::size(s.bytes),
                    output::size(s.added_bytes),
                    output::size(s.only_bytes),
                ]
            })
            .collect(),
    ));
    body.push_str("<h2>Largest folders (stored bytes found only inside them, all history)</h2>");
    body.push_str(&table(
        &["Space", "Folder", "Unique stored"],
        dedup
            .largest_dirs
            .iter()
            .map(|d| {
                vec![
                    d.space.clone(),
                    d.path.clone(),
                    output::size(d.unique_bytes),
                ]
            })
            .collect(),
    ));
    body.push_str("<h2>Files stored most often</h2>");
    body.push_str(&table(
        &["Size", "Copies", "Saved", "Places"],
        dedup
            .duplicates
            .iter()
            .map(|d| {
                vec![
                    output::size(d.size),
                    d.copies.to_string(),
                    output::size(d.saved_bytes),
                    d.paths.join("\n"),
                ]
            })
            .collect(),
    ));
    body
}

/// The HTML document around `body`: style, and the script that marks the charts rendered.
fn document(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}}
h1{{font-size:1.6em}} h2{{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}}
.meta{{color:#555}} figure{{margin:1em 0}} figcaption{{font-size:.9em;color:#555;margin-bottom:.3em}}
svg.chart{{max-width:100%;height:auto;background:#fafafa;border:1px solid #eee}}
svg text{{font-size:12px;fill:#333}} svg .value{{fill:#555}}
table{{border-collapse:collapse;width:100%;font-size:.9em}} th,td{{text-align:left;padding:.25em .5em;border-bottom:1px solid #eee;white-space:pre-wrap;vertical-align:top}}
</style></head><body>
{}
<script>
// Mark the page as rendered: every chart has drawn marks with a size.
window.addEventListener("load", function () {{
  var ok = 0;
  document.querySelectorAll("svg.chart").forEach(function (c) {{
    var marks = c.querySelectorAll(".bar, .line");
    var b = c.getBoundingClientRect();
    if (marks.length > 0 && b.width > 0 && b.height > 0) ok++;
  }});
  document.body.setAttribute("data-charts-rendered", String(ok));
}});
</script>
</body></html>
"#,
        esc(title),
        body
    )
}
