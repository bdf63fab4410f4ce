//! The HTML report: one self-contained page (inline CSS, inline SVG, no script, no
//! external resource) with the run's summary, then per scenario its assertions, numbers and
//! four charts on one time axis: breaker state per key, broker attempts per second,
//! rejections per second, and request latency p50/p99. Phases are marked on every chart
//! and the time a fault was set is shaded.
//!
//! The SVG is written here by hand: a few rectangles, polylines and labels do not need a
//! plotting library.

use std::fmt::Write as _;

use crate::report::{RunReport, ScenarioReport, Span, Timeline, Verdict};

const WIDTH: f64 = 640.0;
const LEFT: f64 = 88.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 30.0;

const CLOSED: &str = "#2e9e5b";
const OPEN: &str = "#d64545";
const HALF_OPEN: &str = "#e9a23b";
const BLUE: &str = "#3867d6";
const GREY: &str = "#a0aec0";
const PURPLE: &str = "#8e44ad";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound (1, 2, 2.5, 5 × 10^k) at or above `v`, and its tick step.
fn nice(v: f64) -> (f64, f64) {
    if !(v.is_finite() && v > 0.0) {
        return (1.0, 0.25);
    }
    let exp = v.log10().floor();
    let base = 10f64.powf(exp);
    for (m, step) in [(1.0, 0.25), (2.0, 0.5), (2.5, 0.5), (5.0, 1.0), (10.0, 2.5)] {
        if v <= m * base * 1.0000001 {
            return (m * base, step * base);
        }
    }
    (10.0 * base, 2.5 * base)
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 10.0 {
        format!("{:.0}", v)
    } else if v.abs() >= 1.0 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    }
}

/// The plotting area of one chart.
struct Frame {
    height: f64,
    x_max: f64,
    y_max: f64,
}

impl Frame {
    fn x(&self, ms: f64) -> f64 {
        LEFT + (ms / self.x_max).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        let h = self.height - TOP - BOTTOM;
        TOP + h - (v / self.y_max).clamp(0.0, 1.0) * h
    }

    fn bottom(&self) -> f64 {
        self.height - BOTTOM
    }
}

fn open_svg(out: &mut String, height: f64, title: &str) {
    let _ = write!(
        out,
        r##"<svg viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{t}"><rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#fff"/><text x="{LEFT}" y="16" class="ct">{t}</text>"##,
        t = esc(title)
    );
}

/// Time axis, phase markers and fault shading.
fn time_axis(out: &mut String, f: &Frame, t: &Timeline) {
    for fault in &t.faults {
        let (x0, x1) = (f.x(fault.from_ms), f.x(fault.to_ms));
        let _ = write!(
            out,
            r#"<rect x="{x0:.1}" y="{TOP}" width="{w:.1}" height="{h:.1}" fill="{OPEN}" fill-opacity="0.07"><title>fault {n}</title></rect>"#,
            w = (x1 - x0).max(1.0),
            h = f.bottom() - TOP,
            n = esc(&fault.name)
        );
    }
    phase_marks(out, f, &t.phases);
    let (x_top, step) = nice(f.x_max);
    let _ = x_top;
    let mut v = 0.0;
    while v <= f.x_max + 1e-9 {
        let x = f.x(v);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{b}" x2="{x:.1}" y2="{b2}" stroke="#555"/><text x="{x:.1}" y="{ty}" class="tk" text-anchor="middle">{l}</text>"##,
            b = f.bottom(),
            b2 = f.bottom() + 4.0,
            ty = f.bottom() + 15.0,
            l = fmt_time(v, step)
        );
        v += step;
    }
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="#555"/>"##,
        b = f.bottom(),
        r = WIDTH - RIGHT
    );
}

fn fmt_time(ms: f64, step: f64) -> String {
    // As many decimals as the step needs (2.5 s ticks read 2.5, 5.0, 7.5; never 2, 5, 8).
    let decimals = |unit: f64| {
        let s = step / unit;
        if (s - s.round()).abs() < 1e-9 {
            0
        } else if (s * 10.0 - (s * 10.0).round()).abs() < 1e-9 {
            1
        } else {
            2
        }
    };
    if step >= 100.0 {
        format!("{:.*} s", decimals(1000.0), ms / 1000.0)
    } else {
        format!("{:.*} ms", decimals(1.0), ms)
    }
}

fn phase_marks(out: &mut String, f: &Frame, phases: &[Span]) {
    for (i, p) in phases.iter().enumerate() {
        let x = f.x(p.from_ms);
        if i > 0 {
            let _ = write!(
                out,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{b}" stroke="#888" stroke-dasharray="3,3"/>"##,
                b = f.bottom()
            );
        }
        let width = f.x(p.to_ms) - x;
        if width > 24.0 {
            let _ = write!(
                out,
                r#"<text x="{tx:.1}" y="{ty}" class="ph">{n}</text>"#,
                tx = x + 3.0,
                ty = TOP + 10.0,
                n = esc(&clip(&p.name, (width / 6.0) as usize))
            );
        }
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(max.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

fn y_axis(out: &mut String, f: &Frame, step: f64, unit: &str) {
    let mut v = 0.0;
    while v <= f.y_max + 1e-9 {
        let y = f.y(v);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{r}" y2="{y:.1}" stroke="#e2e8f0"/><text x="{tx}" y="{ty:.1}" class="tk" text-anchor="end">{l}</text>"##,
            r = WIDTH - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            l = fmt_num(v)
        );
        v += step;
    }
    let _ = write!(
        out,
        r#"<text x="14" y="{y:.1}" class="tk" transform="rotate(-90 14 {y:.1})" text-anchor="middle">{u}</text>"#,
        y = (TOP + f.bottom()) / 2.0,
        u = esc(unit)
    );
}

fn polyline(
    out: &mut String,
    f: &Frame,
    values: &[Option<f64>],
    bucket_ms: f64,
    color: &str,
    label: &str,
) {
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => {
                let mid = (i as f64 + 0.5) * bucket_ms;
                if let Some(run) = runs.last_mut() {
                    run.push((f.x(mid), f.y(*v)));
                }
            }
            None => runs.push(Vec::new()),
        }
    }
    // Sparse series (requests sent in waves) read as points; dense ones as lines.
    let sparse = values.iter().filter(|v| v.is_none()).count() * 3 > values.len();
    for run in runs.iter().filter(|r| !r.is_empty()) {
        if run.len() == 1 || sparse {
            for (x, y) in run {
                let _ = write!(
                    out,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="2" fill="{color}"/>"#
                );
            }
        }
        if run.len() == 1 {
            continue;
        }
        let points: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.6"><title>{}</title></polyline>"#,
            points.join(" "),
            esc(label)
        );
    }
}

fn legend(out: &mut String, items: &[(&str, &str)]) {
    let mut x = WIDTH - RIGHT;
    for (label, color) in items.iter().rev() {
        let w = 18.0 + 6.5 * label.chars().count() as f64;
        x -= w;
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="8" width="10" height="10" fill="{color}"/><text x="{tx:.1}" y="17" class="tk">{l}</text>"#,
            tx = x + 13.0,
            l = esc(label)
        );
        x -= 6.0;
    }
}

fn series_chart(
    t: &Timeline,
    title: &str,
    unit: &str,
    lines: &[(&str, &str, Vec<Option<f64>>)],
) -> String {
    let height = 190.0;
    let max = lines
        .iter()
        .flat_map(|(_, _, v)| v.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b));
    let (y_max, step) = nice(max.max(1e-9) * 1.05);
    let f = Frame {
        height,
        x_max: t.duration_ms.max(1.0),
        y_max: if max == 0.0 { 1.0 } else { y_max },
    };
    let mut out = String::new();
    open_svg(&mut out, height, title);
    y_axis(&mut out, &f, if max == 0.0 { 0.5 } else { step }, unit);
    time_axis(&mut out, &f, t);
    for (label, color, values) in lines {
        polyline(
            &mut out,
            &f,
            values,
            t.series.bucket_ms as f64,
            color,
            label,
        );
    }
    let items: Vec<(&str, &str)> = lines.iter().map(|(l, c, _)| (*l, *c)).collect();
    legend(&mut out, &items);
    if max == 0.0 {
        let _ = write!(
            out,
            r#"<text x="{x}" y="{y}" class="tk" text-anchor="middle">none</text>"#,
            x = (LEFT + WIDTH - RIGHT) / 2.0,
            y = (TOP + height - BOTTOM) / 2.0
        );
    }
    out.push_str("</svg>");
    out
}

fn lanes_chart(t: &Timeline) -> String {
    // As tall as the other charts for a few keys; one thin lane per key for many.
    let n = t.lanes.len().max(1) as f64;
    let lane = (120.0 / n).clamp(5.0, 40.0);
    let height = (TOP + 14.0 + lane * n + BOTTOM).max(190.0);
    let f = Frame {
        height,
        x_max: t.duration_ms.max(1.0),
        y_max: 1.0,
    };
    let mut out = String::new();
    open_svg(&mut out, height, "breaker state per key");
    legend(
        &mut out,
        &[("closed", CLOSED), ("open", OPEN), ("half-open", HALF_OPEN)],
    );
    let label_every = (12.0 / lane).ceil().max(1.0) as usize;
    for (i, l) in t.lanes.iter().enumerate() {
        let y = TOP + 14.0 + i as f64 * lane;
        for s in &l.segments {
            let color = match s.state.as_str() {
                "open" => OPEN,
                "half_open" => HALF_OPEN,
                _ => CLOSED,
            };
            let (x0, x1) = (f.x(s.from_ms), f.x(s.to_ms));
            let _ = write!(
                out,
                r#"<rect x="{x0:.1}" y="{y:.1}" width="{w:.2}" height="{h:.1}" fill="{color}"><title>{k}: {st} {a:.0}–{b:.0} ms</title></rect>"#,
                w = (x1 - x0).max(0.5),
                h = (lane - 1.0).max(1.0),
                k = esc(&l.key),
                st = s.state,
                a = s.from_ms,
                b = s.to_ms
            );
        }
        if i % label_every == 0 {
            let _ = write!(
                out,
                r#"<text x="{tx}" y="{ty:.1}" class="tk" text-anchor="end">{k}</text>"#,
                tx = LEFT - 4.0,
                ty = y + lane / 2.0 + 3.5,
                k = esc(&clip(&l.key, 15))
            );
        }
    }
    if t.lanes.is_empty() {
        let _ = write!(
            out,
            r#"<text x="{x}" y="{y}" class="tk" text-anchor="middle">no key used</text>"#,
            x = (LEFT + WIDTH - RIGHT) / 2.0,
            y = TOP + 20.0
        );
    }
    // Phase marks span the lanes; the phase names sit above them.
    let g = Frame {
        height,
        x_max: f.x_max,
        y_max: 1.0,
    };
    time_axis(
        &mut out,
        &g,
        &Timeline {
            faults: Vec::new(),
            ..t.clone()
        },
    );
    out.push_str("</svg>");
    out
}

fn charts(s: &ScenarioReport) -> String {
    let t = &s.timeline;
    let some = |v: &[f64]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
    let mut out = String::from(r#"<div class="charts">"#);
    for svg in [
        lanes_chart(t),
        series_chart(
            t,
            "broker attempts per second",
            "per second",
            &[
                ("requests sent", GREY, some(&t.series.requests_per_sec)),
                ("broker attempts", BLUE, some(&t.series.attempts_per_sec)),
            ],
        ),
        series_chart(
            t,
            "rejections (503 circuit_open) per second",
            "per second",
            &[("rejections", OPEN, some(&t.series.rejections_per_sec))],
        ),
        series_chart(
            t,
            "request latency by send time",
            "ms",
            &[
                ("p50", BLUE, t.series.latency_p50_ms.clone()),
                ("p99", PURPLE, t.series.latency_p99_ms.clone()),
            ],
        ),
    ] {
        let _ = write!(out, r#"<div class="chart">{svg}</div>"#);
    }
    out.push_str("</div>");
    out
}

fn badge(v: Verdict) -> String {
    let class = match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::NotApplicable => "na",
    };
    format!(r#"<span class="badge {class}">{}</span>"#, v.as_str())
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;background:#f4f6f8;color:#1a202c}
main{max-width:1320px;margin:0 auto;padding:20px 28px 60px}
h1{font-size:22px;margin:6px 0 4px}h2{font-size:18px;margin:0 0 4px;display:flex;gap:10px;align-items:center}
.meta{color:#4a5568;font-size:13px;margin:2px 0}
code{background:#edf2f7;padding:1px 5px;border-radius:3px;font-size:12px;word-break:break-all}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:16px 18px;margin:18px 0}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #edf2f7;vertical-align:top}
th{background:#f7fafc;font-weight:600}
tr.bad td{background:#fff5f5}
td.n{white-space:nowrap}
td.m{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
.badge{display:inline-block;font-size:12px;font-weight:700;padding:2px 8px;border-radius:10px;color:#fff}
.pass{background:#2e9e5b}.fail{background:#d64545}.na{background:#718096}
.ok{color:#2e9e5b;font-weight:700}.ko{color:#d64545;font-weight:700}
.desc{color:#4a5568;margin:0 0 10px;font-size:14px}
.charts{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:12px;margin-top:12px}
.chart{border:1px solid #edf2f7;border-radius:6px;padding:4px}
.chart svg{width:100%;height:auto;display:block}
svg .ct{font-size:12px;font-weight:600;fill:#2d3748}
svg .tk{font-size:10px;fill:#4a5568}
svg .ph{font-size:10px;fill:#4a5568;font-style:italic}
ul.nums{columns:2;font-size:13px;color:#2d3748;margin:10px 0 0;padding-left:18px}
.na-why{color:#4a5568;font-style:italic}
"#;

/// Renders the whole run as one HTML page.
pub fn render(report: &RunReport) -> String {
    let mut out = String::new();
    let count = |v: Verdict| report.scenarios.iter().filter(|s| s.verdict == v).count();
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>Beamline Router scenario report</title><style>{STYLE}</style></head><body><main>"#
    );
    let _ = write!(
        out,
        r#"<h1>Beamline Router scenario report {}</h1><p class="meta">profile <b>{}</b> ({} clients × {} requests) · target {} · broker {} · seed {} · {:.1} s · {} requests at {:.0} req/s of load time</p><p class="meta">{} passed · {} failed · {} not applicable</p><p class="meta">reproduce: <code>{}</code></p>"#,
        badge(if report.passed() {
            Verdict::Pass
        } else {
            Verdict::Fail
        }),
        esc(&report.profile),
        report.clients,
        report.requests,
        esc(&report.target),
        esc(&report.broker),
        report.seed,
        report.duration.as_secs_f64(),
        report.total_requests,
        report.throughput_rps,
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::NotApplicable),
        esc(&report.reproduce)
    );
    out.push_str(r#"<section><table><tr><th>scenario</th><th>verdict</th><th>assertions</th><th>requests</th><th>time</th><th>failed expectations</th></tr>"#);
    for s in &report.scenarios {
        let passed = s.assertions.iter().filter(|a| a.passed).count();
        let failed: Vec<String> = s.failures().map(|a| esc(&a.name)).collect();
        let _ = write!(
            out,
            r##"<tr><td><a href="#{n}">{n}</a></td><td>{}</td><td class="n">{passed}/{}</td><td class="n">{}</td><td class="n">{:.2} s</td><td>{}</td></tr>"##,
            badge(s.verdict),
            s.assertions.len(),
            s.requests,
            s.duration.as_secs_f64(),
            if let Some(why) = &s.not_applicable {
                format!(r#"<span class="na-why">{}</span>"#, esc(why))
            } else {
                failed.join("<br>")
            },
            n = esc(&s.name)
        );
    }
    out.push_str("</table></section>");
    for s in &report.scenarios {
        let _ = write!(
            out,
            r#"<section id="{n}"><h2>{n} {}</h2><p class="desc">{} · {:.2} s</p>"#,
            badge(s.verdict),
            esc(&s.description),
            s.duration.as_secs_f64(),
            n = esc(&s.name)
        );
        if let Some(why) = &s.not_applicable {
            let _ = write!(
                out,
                r#"<p class="na-why">Not applicable: {}</p></section>"#,
                esc(why)
            );
            continue;
        }
        out.push_str(r#"<table><tr><th></th><th>assertion</th><th>kind</th><th>measured</th><th>bound</th></tr>"#);
        for a in &s.assertions {
            let _ = write!(
                out,
                r#"<tr{}><td>{}</td><td>{}</td><td>{}</td><td class="m">{}</td><td class="m">{}</td></tr>"#,
                if a.passed { "" } else { r#" class="bad""# },
                if a.passed {
                    r#"<span class="ok">✓</span>"#
                } else {
                    r#"<span class="ko">✗</span>"#
                },
                esc(&a.name),
                match a.kind {
                    crate::report::AssertionKind::Setup => "setup",
                    crate::report::AssertionKind::Generic => "R10",
                    crate::report::AssertionKind::Expected => "expected",
                },
                esc(&a.measured),
                esc(&a.bound)
            );
        }
        out.push_str("</table>");
        if !s.numbers.is_empty() {
            out.push_str(r#"<ul class="nums">"#);
            for n in &s.numbers {
                let _ = write!(out, "<li>{}: <b>{}</b></li>", esc(&n.name), esc(&n.value));
            }
            out.push_str("</ul>");
        }
        out.push_str(&charts(s));
        out.push_str("</section>");
    }
    out.push_str("</main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{AssertionKind, Lane, Segment, Series};
    use std::time::Duration;

    fn sample() -> RunReport {
        let mut s = ScenarioReport::new("demo", "a <demo> & more");
        s.check(AssertionKind::Generic, "holds", true, 1, 2);
        s.check(AssertionKind::Expected, "breaks", false, 3, "<= 2");
        s.timeline = Timeline {
            duration_ms: 1000.0,
            phases: vec![Span {
                name: "baseline".into(),
                from_ms: 0.0,
                to_ms: 1000.0,
            }],
            faults: vec![Span {
                name: "main: error".into(),
                from_ms: 200.0,
                to_ms: 600.0,
            }],
            lanes: vec![Lane {
                key: "t0 / main".into(),
                segments: vec![
                    Segment {
                        state: "closed".into(),
                        from_ms: 0.0,
                        to_ms: 300.0,
                    },
                    Segment {
                        state: "open".into(),
                        from_ms: 300.0,
                        to_ms: 1000.0,
                    },
                ],
            }],
            series: Series {
                bucket_ms: 100,
                requests_per_sec: vec![10.0; 10],
                attempts_per_sec: vec![5.0; 10],
                rejections_per_sec: vec![0.0; 10],
                latency_p50_ms: vec![Some(1.0), None, Some(2.0)],
                latency_p99_ms: vec![Some(3.0), None, Some(4.0)],
            },
        };
        s.finish();
        RunReport {
            profile: "ci".into(),
            clients: 10,
            requests: 20,
            target: "t".into(),
            broker: "embedded".into(),
            seed: 1,
            scenarios: vec![
                s,
                ScenarioReport::not_applicable("nats_only", "d", "needs NATS"),
            ],
            duration: Duration::from_millis(1500),
            total_requests: 20,
            throughput_rps: 100.0,
            reproduce: "beamline-router scenario run --seed 1".into(),
        }
    }

    #[test]
    fn the_page_is_self_contained_and_escaped() {
        let html = render(&sample());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("src=\"http"));
        assert!(!html.contains("href=\"http"));
        assert!(html.contains("a &lt;demo&gt; &amp; more"));
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(html.contains("Not applicable: needs NATS"));
        assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    }

    #[test]
    fn time_ticks_keep_the_decimals_their_step_needs() {
        assert_eq!(fmt_time(7500.0, 2500.0), "7.5 s");
        assert_eq!(fmt_time(5000.0, 2500.0), "5.0 s");
        assert_eq!(fmt_time(2000.0, 1000.0), "2 s");
        assert_eq!(fmt_time(750.0, 250.0), "0.75 s");
        assert_eq!(fmt_time(500.0, 100.0), "0.5 s");
        assert_eq!(fmt_time(50.0, 25.0), "50 ms");
        assert_eq!(fmt_time(7.5, 2.5), "7.5 ms");
    }

    #[test]
    fn nice_bounds() {
        assert_eq!(nice(7.0), (10.0, 2.5));
        assert_eq!(nice(180.0), (200.0, 50.0));
        assert_eq!(nice(0.0), (1.0, 0.25));
        assert_eq!(nice(1.0), (1.0, 0.25));
    }
}
