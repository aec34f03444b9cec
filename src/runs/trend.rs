//! `lakescore runs OUT --html FILE`: the nights of an output on one static
//! page (inline CSS and SVG, no network, aggregates only, like the run
//! report): small plots over the last runs (rows scored, quarantined and
//! flagged; wall time against the SLA; the score's mean and deciles; the
//! largest drift and its column; rule failures), every change of model
//! version marked on each, and a line per run with how it ended and why.
//!
//! Everything comes from the ledger records ([`super::RunEntry`]) and the
//! summary each judged run leaves in its record ([`super::summary`]), so the
//! page of a year of nights reads a few hundred kilobytes.

use std::fmt::Write as _;

use super::RunEntry;
use crate::commit::{DriftSummary, RunSummary, ScoreSummary};
use crate::drift::Status;
use crate::html::{MISSING, badge, esc, fmt_count, fmt_opt_sig, fmt_sig, nice_ceiling, page_head};

/// Runs the page shows unless told otherwise (`--last`).
pub const DEFAULT_LAST: usize = 30;

/// The page for `runs` (oldest first: the last runs of the `total` in the
/// ledger of `out`).
pub fn render(out: &str, runs: &[RunEntry], total: usize) -> String {
    let nights = nights(runs);
    let mut page = String::with_capacity(16 * 1024 + 2048 * nights.len());
    page.push_str(&page_head(&format!("lakescore runs: {out}"), TREND_STYLE));
    page.push_str("<body>\n<main>\n");
    page.push_str(&header(out, &nights, total));
    if nights.is_empty() {
        page.push_str("<p class=\"muted\">No runs.</p>\n");
    } else {
        page.push_str(&plots(&nights));
    }
    page.push_str(&runs_table(&nights));
    page.push_str(FOOTER);
    page.push_str("</main>\n");
    page.push_str(SELF_CHECK_SCRIPT);
    page.push_str("</body>\n</html>\n");
    page
}

const TREND_STYLE: &str = "
main { max-width: 1500px; } .wide { overflow-x: auto; }
svg.trend { display: block; margin: 6px 0 14px; }
svg .line { fill: none; stroke: #2563eb; stroke-width: 1.6; }
svg .line.second { stroke: #d97706; } svg .line.mean { stroke: #111827; stroke-dasharray: 4 3; }
svg circle.point { fill: #2563eb; } svg circle.point.second { fill: #d97706; }
svg circle.point.warn { fill: #d97706; } svg circle.point.fail { fill: #b91c1c; }
svg .band { fill: #bfdbfe; opacity: 0.7; }
svg .limit { stroke: #b91c1c; stroke-dasharray: 6 4; } svg .limit.warn { stroke: #d97706; }
svg .version-change { stroke: #7c3aed; stroke-width: 1.5; stroke-dasharray: 3 3; }
svg text.version-label { fill: #7c3aed; font-weight: 600; }
svg .failed-run { fill: #b91c1c; font-weight: 700; }
svg rect.bar.failed { fill: #b91c1c; } svg rect.bar.warned { fill: #d97706; }
tr.version-change td { border-top: 2px dashed #7c3aed; }
#runs { font-size: 13px; } #runs td:nth-child(-n+2) { white-space: nowrap; }
tr.failed td { background: #fef2f2; }
.legend { color: var(--muted); font-size: 12px; margin: 0 0 2px; }
";

const FOOTER: &str = "<footer>This page contains aggregates only, from the output's run ledger \
(<code>_lakescore/runs/</code>): counts, times, the score's mean and deciles, drift measures and rule ids. \
No scores or feature values of individual rows. It loads nothing from the network.</footer>\n";

/// The browser test cannot see a page: this script checks the laid-out
/// plots and leaves its verdict in `data-rendered`, as the run report's does.
const SELF_CHECK_SCRIPT: &str = r#"<script>
(function () {
  var root = document.documentElement;
  function count(svg, selector, attribute) {
    var want = Number(svg.getAttribute(attribute));
    var got = svg.querySelectorAll(selector).length;
    return want === got ? "" : " drew " + got + " " + selector + ", expected " + want;
  }
  function verdict() {
    if (!document.getElementById("runs")) return "broken:runs table missing";
    var svgs = document.querySelectorAll("svg.trend");
    for (var i = 0; i < svgs.length; i++) {
      if (!(svgs[i].clientWidth > 0 && svgs[i].clientHeight > 0)) return "broken:svg " + i + " has an empty box";
      var drawn = svgs[i].getBBox();
      if (!(drawn.width > 0 && drawn.height > 0)) return "broken:svg " + i + " draws nothing";
      var wrong = count(svgs[i], "circle.point", "data-points") +
        count(svgs[i], "line.version-change", "data-version-changes") +
        count(svgs[i], "text.failed-run", "data-failed-runs") +
        count(svgs[i], "rect.bar", "data-bars");
      if (wrong) return "broken:svg " + svgs[i].id + wrong;
    }
    return "ok";
  }
  try { root.dataset.rendered = verdict(); } catch (e) { root.dataset.rendered = "broken:" + e; }
})();
</script>
"#;

/// One run as the page shows it.
struct Night<'a> {
    run: &'a RunEntry,
    /// The start, short enough for an axis: `11-26` (the day) when the
    /// runs shown span several days, `04:00:12` when they are of one day.
    label: String,
    /// `churn 1.2.0`, or the digest when the model has no version.
    model: String,
    /// The model differs from the run before's (name, version or bytes).
    model_changed: bool,
    /// Published nothing: failed, rejected, interrupted or died.
    failed: bool,
}

fn nights(runs: &[RunEntry]) -> Vec<Night<'_>> {
    // Nightly runs are told apart by their day; runs of one day by the time.
    let days: std::collections::BTreeSet<&str> = runs.iter().filter_map(|r| r.record.started_at.get(..10)).collect();
    let label_range = if days.len() > 1 { 5..10 } else { 11..19 };
    let mut nights: Vec<Night> = Vec::with_capacity(runs.len());
    for (i, run) in runs.iter().enumerate() {
        let r = &run.record;
        let before = i.checked_sub(1).map(|j| &runs[j].record);
        let model_changed = before.is_some_and(|b| {
            (&b.model_name, &b.model_version, &b.model_sha256) != (&r.model_name, &r.model_version, &r.model_sha256)
        });
        // The version names a model, unless only its bytes changed.
        let same_name = before.is_some_and(|b| (&b.model_name, &b.model_version) == (&r.model_name, &r.model_version));
        let model = match &r.model_version {
            Some(version) if !(model_changed && same_name) => format!("{} {version}", r.model_name),
            Some(version) => format!(
                "{} {version} ({})",
                r.model_name,
                r.model_sha256.get(..12).unwrap_or("")
            ),
            None => format!("{} {}", r.model_name, r.model_sha256.get(..12).unwrap_or("")),
        };
        nights.push(Night {
            run,
            label: r
                .started_at
                .get(label_range.clone())
                .unwrap_or(&r.started_at)
                .to_string(),
            model,
            model_changed,
            failed: !matches!(run.outcome.as_str(), "succeeded" | "sla_missed" | "running"),
        });
    }
    nights
}

fn header(out: &str, nights: &[Night], total: usize) -> String {
    let mut html = format!("<header>\n<h1>Runs of <code>{}</code></h1>\n", esc(out));
    let (Some(first), Some(last)) = (nights.first(), nights.last()) else {
        return html + "</header>\n";
    };
    let _ = writeln!(
        html,
        "<p class=\"sub\">The last {} of {total} runs, {} to {}.</p>",
        nights.len(),
        esc(&first.run.record.started_at),
        esc(&last.run.record.started_at)
    );
    let mut outcomes: Vec<(&str, usize)> = Vec::new();
    for night in nights {
        match outcomes.iter_mut().find(|(o, _)| *o == night.run.outcome) {
            Some((_, n)) => *n += 1,
            None => outcomes.push((&night.run.outcome, 1)),
        }
    }
    html.push_str("<p class=\"verdicts\">");
    for (outcome, n) in outcomes {
        let _ = write!(html, "{} × {n} ", badge(Some(outcome)));
    }
    html.push_str("</p>\n");
    let changes: Vec<String> = nights
        .iter()
        .filter(|n| n.model_changed)
        .map(|n| format!("<strong>{}</strong> from {}", esc(&n.model), esc(&n.label)))
        .collect();
    let _ = writeln!(
        html,
        "<p>Model: {}{}</p>",
        esc(&first.model),
        if changes.is_empty() {
            String::new()
        } else {
            format!("; then {}", changes.join("; "))
        }
    );
    html + "</header>\n"
}

// ---------------------------------------------------------------------------------------------
// Plots: one small chart per measure, runs left to right, oldest first.

const W: f64 = 1040.0;
const H: f64 = 180.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 34.0;

/// A value per run (`None`: the run has no such number).
type PerRun = Vec<Option<f64>>;

/// A line of values over the runs.
struct Series {
    name: &'static str,
    /// CSS class of its line and points (`""`, `second`, `mean`).
    class: &'static str,
    values: PerRun,
    /// Points are drawn (a mean drawn over a band needs none).
    points: bool,
}

/// What a chart draws besides its lines.
#[derive(Default)]
struct Extras {
    /// A band between two series (the score's first and ninth deciles).
    band: Option<(PerRun, PerRun)>,
    /// Horizontal limits: value, label, CSS class (`limit`, `limit warn`).
    limits: Vec<(f64, String, &'static str)>,
    /// Per run: a status for the first series' point (warn, fail) and a
    /// label written beside it.
    marks: Vec<Option<(Status, String)>>,
    /// Stacked bars instead of lines: (count, class) per run, bottom first.
    bars: Option<Vec<Vec<(f64, &'static str)>>>,
    /// The y axis starts at the lowest value rather than at zero.
    float_base: bool,
}

fn plots(nights: &[Night]) -> String {
    fn summary<'a>(night: &Night<'a>) -> Option<&'a RunSummary> {
        night.run.record.summary.as_ref()
    }
    let mut html = String::from("<h2 id=\"plots\">Over the runs</h2>\n");

    let scored = nights.iter().map(rows_scored).collect();
    html.push_str(&chart(
        "rows-scored",
        "Rows scored",
        nights,
        &[Series {
            name: "scored",
            class: "",
            values: scored,
            points: true,
        }],
        Extras::default(),
    ));

    let quarantined = nights
        .iter()
        .map(|n| n.run.record.rows_quarantined.map(|q| q as f64))
        .collect();
    let flagged = nights
        .iter()
        .map(|n| summary(n).map(|s| s.rows_flagged as f64))
        .collect();
    html.push_str(&chart(
        "rows-quarantined-flagged",
        "Rows quarantined (blue) and flagged (orange)",
        nights,
        &[
            Series {
                name: "quarantined",
                class: "",
                values: quarantined,
                points: true,
            },
            Series {
                name: "flagged",
                class: "second",
                values: flagged,
                points: true,
            },
        ],
        Extras::default(),
    ));

    let seconds = nights
        .iter()
        .map(|n| summary(n).and_then(|s| s.wall_seconds).or(n.run.seconds))
        .collect();
    let sla = same_everywhere(nights.iter().filter_map(summary).map(|s| s.max_duration_seconds));
    let limits = sla
        .map(|limit| vec![(limit as f64, format!("SLA {limit} s"), "limit")])
        .unwrap_or_default();
    let missed: Vec<Option<(Status, String)>> = nights
        .iter()
        .map(|n| {
            (!n.run.record.sla_missed.is_empty())
                .then(|| (Status::Fail, format!("missed {}", n.run.record.sla_missed.join(", "))))
        })
        .collect();
    html.push_str(&chart(
        "wall-time",
        "Wall time, seconds",
        nights,
        &[Series {
            name: "seconds",
            class: "",
            values: seconds,
            points: true,
        }],
        Extras {
            limits,
            marks: missed,
            ..Extras::default()
        },
    ));

    fn score<'a>(night: &Night<'a>) -> Option<&'a ScoreSummary> {
        night.run.record.summary.as_ref()?.score.as_ref()
    }
    let decile = |i: usize| -> Vec<Option<f64>> {
        nights
            .iter()
            .map(|n| score(n).and_then(|s| s.deciles.get(i).copied()))
            .collect()
    };
    let column = nights
        .iter()
        .rev()
        .find_map(|n| score(n).map(|s| s.column.clone()))
        .unwrap_or_else(|| "score".into());
    html.push_str(&chart(
        "score",
        &format!("{column}: median (blue), mean (dashed), 10th to 90th percentile (band)"),
        nights,
        &[
            Series {
                name: "median",
                class: "",
                values: decile(4),
                points: true,
            },
            Series {
                name: "mean",
                class: "mean",
                values: nights.iter().map(|n| score(n).and_then(|s| s.mean)).collect(),
                points: false,
            },
        ],
        Extras {
            band: Some((decile(0), decile(8))),
            float_base: true,
            ..Extras::default()
        },
    ));

    fn drift<'a>(night: &Night<'a>) -> Option<&'a DriftSummary> {
        night.run.record.summary.as_ref()?.drift.as_ref()
    }
    let psi = nights.iter().map(|n| drift(n).map(|d| d.psi)).collect();
    // A point is coloured by the run's drift verdict (the score's drift, or
    // another feature's own thresholds, can fail a run whose largest PSI
    // passes) and labelled with the columns that moved.
    let marks = nights
        .iter()
        .map(|n| {
            drift(n).filter(|d| d.verdict != Status::Pass).map(|d| {
                let label = match d.moved.len() {
                    0 => d.column.clone(),
                    1 | 2 => d.moved.join(", "),
                    n => format!("{}, {} and {} more", d.moved[0], d.moved[1], n - 2),
                };
                (d.verdict, label)
            })
        })
        .collect();
    // Threshold lines only when every night shown had the same ones.
    let judged: Vec<&DriftSummary> = nights.iter().filter_map(drift).collect();
    let mut limits = Vec::new();
    if let Some(warn) = same_everywhere(judged.iter().map(|d| d.psi_warn)) {
        limits.push((warn, format!("warn {}", fmt_sig(warn)), "limit warn"));
    }
    if let Some(fail) = same_everywhere(judged.iter().map(|d| d.psi_fail)) {
        limits.push((fail, format!("fail {}", fmt_sig(fail)), "limit"));
    }
    html.push_str(&chart(
        "drift",
        "Drift: the PSI of the feature that matters most, the columns named where drift warns or fails",
        nights,
        &[Series {
            name: "PSI",
            class: "",
            values: psi,
            points: true,
        }],
        Extras {
            limits,
            marks,
            ..Extras::default()
        },
    ));

    let rules = nights
        .iter()
        .map(|n| match summary(n) {
            Some(s) => vec![
                ((s.rules_failed.len() + s.guards_failed.len()) as f64, "failed"),
                ((s.rules_warned.len() + s.guards_warned.len()) as f64, "warned"),
            ],
            None => Vec::new(),
        })
        .collect();
    html.push_str(&chart(
        "rules",
        "Rules and guards that failed (red) or warned (orange)",
        nights,
        &[],
        Extras {
            bars: Some(rules),
            ..Extras::default()
        },
    ));
    html
}

fn chart(id: &str, title: &str, nights: &[Night], series: &[Series], extras: Extras) -> String {
    let frame = Frame::new(nights.len(), series, &extras);
    let points: usize = series
        .iter()
        .filter(|s| s.points)
        .map(|s| s.values.iter().flatten().filter(|v| v.is_finite()).count())
        .sum();
    let changes = nights.iter().filter(|n| n.model_changed).count();
    let failed = nights.iter().filter(|n| n.failed).count();
    let bars = extras
        .bars
        .as_ref()
        .map_or(0, |b| b.iter().flatten().filter(|(v, _)| *v > 0.0).count());
    // The counts let the page's self-check see that everything was drawn.
    let mut svg = format!(
        "<svg class=\"trend\" id=\"{}\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"{}\" data-points=\"{points}\" data-version-changes=\"{changes}\" \
         data-failed-runs=\"{failed}\" data-bars=\"{bars}\">\n<text x=\"{LEFT}\" y=\"14\">{}</text>\n",
        esc(id),
        esc(title),
        esc(title)
    );
    frame.axes(&mut svg, nights);
    if let Some((low, high)) = &extras.band {
        frame.band(&mut svg, low, high);
    }
    frame.limits(&mut svg, &extras.limits);
    if let Some(bars) = &extras.bars {
        frame.bars(&mut svg, bars, nights);
    }
    for s in series {
        frame.line(&mut svg, s);
    }
    for (k, s) in series.iter().enumerate().filter(|(_, s)| s.points) {
        // Marks belong to the first series.
        let marks: &[Option<(Status, String)>] = if k == 0 { &extras.marks } else { &[] };
        frame.points(&mut svg, s, marks, nights);
    }
    frame.run_markers(&mut svg, nights);
    svg + "</svg>\n"
}

/// Where a chart draws: one column per run, a y range over what it shows.
struct Frame {
    runs: usize,
    /// Width of a run's column.
    step: f64,
    lo: f64,
    hi: f64,
}

impl Frame {
    const BASE: f64 = H - BOTTOM;
    const HEIGHT: f64 = H - TOP - BOTTOM;

    /// The y range covers every value drawn and the limits, from zero
    /// unless `extras.float_base`.
    fn new(runs: usize, series: &[Series], extras: &Extras) -> Frame {
        let mut values: Vec<f64> = series.iter().flat_map(|s| s.values.iter().flatten().copied()).collect();
        if let Some((low, high)) = &extras.band {
            values.extend(low.iter().chain(high).flatten());
        }
        values.extend(extras.limits.iter().map(|(v, _, _)| *v));
        if let Some(bars) = &extras.bars {
            values.extend(bars.iter().map(|stack| stack.iter().map(|(v, _)| v).sum::<f64>()));
        }
        values.retain(|v| v.is_finite());
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let (lo, hi) = match (extras.float_base, values.is_empty()) {
            (_, true) => (0.0, 1.0),
            (true, false) => {
                let pad = ((max - min) * 0.1).max(max.abs() * 1e-3).max(1e-9);
                (min - pad, max + pad)
            }
            (false, false) => (0.0, nice_ceiling(max.max(0.0))),
        };
        Frame {
            runs,
            step: (W - LEFT - RIGHT) / runs.max(1) as f64,
            lo,
            hi,
        }
    }

    /// The middle of run `i`'s column.
    fn x(&self, i: usize) -> f64 {
        LEFT + self.step * (i as f64 + 0.5)
    }

    fn y(&self, value: f64) -> f64 {
        Self::BASE - ((value - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.05) * Self::HEIGHT
    }

    /// Grid lines with their values (bottom, middle, top) and run labels,
    /// thinned to about eight.
    fn axes(&self, svg: &mut String, nights: &[Night]) {
        for fraction in [0.0, 0.5, 1.0] {
            let at = Self::BASE - Self::HEIGHT * fraction;
            let _ = writeln!(
                svg,
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{at:.1}\" y2=\"{at:.1}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                W - RIGHT,
                LEFT - 6.0,
                at + 4.0,
                axis_number(self.lo + (self.hi - self.lo) * fraction)
            );
        }
        let every = self.runs.div_ceil(8).max(1);
        for (i, night) in nights.iter().enumerate().filter(|(i, _)| i % every == 0) {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                self.x(i),
                H - 12.0,
                esc(&night.label)
            );
        }
    }

    /// A band between two series: one polygon per stretch of runs with both.
    fn band(&self, svg: &mut String, low: &[Option<f64>], high: &[Option<f64>]) {
        for stretch in stretches(self.runs, |i| low[i].zip(high[i])) {
            let upper = stretch.iter().map(|&i| (i, high[i]));
            let lower = stretch.iter().rev().map(|&i| (i, low[i]));
            let _ = writeln!(svg, "<path class=\"band\" d=\"{}Z\"/>", self.path(upper.chain(lower)));
        }
    }

    /// Horizontal limits (an SLA, drift thresholds), labelled at the right.
    fn limits(&self, svg: &mut String, limits: &[(f64, String, &'static str)]) {
        for (value, label, class) in limits {
            let at = self.y(*value);
            let _ = writeln!(
                svg,
                "<line class=\"{class}\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{at:.1}\" y2=\"{at:.1}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                W - RIGHT,
                W - RIGHT - 2.0,
                at - 3.0,
                esc(label)
            );
        }
    }

    /// Stacked bars, one stack per run.
    fn bars(&self, svg: &mut String, bars: &[Vec<(f64, &'static str)>], nights: &[Night]) {
        let width = (self.step * 0.6).max(1.0);
        for (i, stack) in bars.iter().enumerate() {
            let mut base = 0.0;
            for (value, class) in stack.iter().filter(|(v, _)| *v > 0.0) {
                let (top, foot) = (self.y(base + value), self.y(base));
                let _ = writeln!(
                    svg,
                    "<rect class=\"bar {class}\" x=\"{:.1}\" y=\"{top:.1}\" width=\"{width:.1}\" height=\"{:.1}\">\
                     <title>{}: {value} {}</title></rect>",
                    self.x(i) - width / 2.0,
                    (foot - top).max(0.5),
                    esc(&nights[i].run.record.run_id),
                    class
                );
                base += value;
            }
        }
    }

    /// A series' line, broken where runs have no value.
    fn line(&self, svg: &mut String, series: &Series) {
        let class = match series.class {
            "" => "line".to_string(),
            class => format!("line {class}"),
        };
        for stretch in stretches(self.runs, |i| series.values[i].filter(|v| v.is_finite())) {
            let path = self.path(stretch.iter().map(|&i| (i, series.values[i])));
            let _ = writeln!(svg, "<path class=\"{class}\" d=\"{path}\"/>");
        }
    }

    /// A series' points, each with its run and value as a tooltip; a marked
    /// point coloured by its status and labelled (once per streak of runs
    /// with the same label).
    fn points(&self, svg: &mut String, series: &Series, marks: &[Option<(Status, String)>], nights: &[Night]) {
        let mark_at = |i: usize| marks.get(i).and_then(Option::as_ref);
        for (i, value) in series.values.iter().enumerate() {
            let Some(value) = value.filter(|v| v.is_finite()) else {
                continue;
            };
            let mark = mark_at(i);
            let class = match mark.map(|(status, _)| *status) {
                Some(Status::Fail) => " fail",
                Some(Status::Warn) => " warn",
                _ if !series.class.is_empty() => " second",
                _ => "",
            };
            let _ = writeln!(
                svg,
                "<circle class=\"point{class}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{:.1}\"><title>{} {}: {} {}</title></circle>",
                self.x(i),
                self.y(value),
                // Smaller where runs are many, so a year stays a line of dots.
                (self.step / 3.0).clamp(0.8, 3.0),
                esc(&nights[i].label),
                esc(&nights[i].run.record.run_id),
                axis_number(value),
                series.name
            );
            let repeated = i > 0
                && series.values[i - 1].is_some()
                && mark_at(i - 1).map(|(_, label)| label) == mark.map(|(_, label)| label);
            if let Some((_, label)) = mark.filter(|_| !repeated) {
                let _ = writeln!(
                    svg,
                    "<text class=\"mark-label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                    self.x(i) + 5.0,
                    self.y(value) - 5.0,
                    esc(label)
                );
            }
        }
    }

    /// A dashed line before each run whose model changed, named; a cross at
    /// the foot of each run that published nothing, with its reason.
    fn run_markers(&self, svg: &mut String, nights: &[Night]) {
        let mut changes = 0;
        for (i, night) in nights.iter().enumerate() {
            if night.model_changed {
                // Every other name a line lower, so that close changes stay legible.
                let label_y = TOP + 10.0 + 12.0 * f64::from(changes % 2);
                changes += 1;
                let at = self.x(i) - self.step / 2.0;
                // Named to the right of the line, or to its left near the edge.
                let anchor = if at > W - RIGHT - 160.0 { "end" } else { "start" };
                let _ = writeln!(
                    svg,
                    "<line class=\"version-change\" x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{TOP}\" y2=\"{:.1}\">\
                     <title>model {} from {}</title></line>\
                     <text class=\"version-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
                    Self::BASE,
                    esc(&night.model),
                    esc(&night.run.record.run_id),
                    if anchor == "start" { at + 3.0 } else { at - 3.0 },
                    label_y,
                    esc(&night.model)
                );
            }
            if night.failed {
                let _ = writeln!(
                    svg,
                    "<text class=\"failed-run\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">×<title>{} {}: {}</title></text>",
                    self.x(i),
                    Self::BASE - 3.0,
                    esc(&night.run.record.run_id),
                    esc(&night.run.outcome),
                    esc(reason(night).unwrap_or(""))
                );
            }
        }
    }

    /// An SVG path through (run, value) points.
    fn path(&self, points: impl Iterator<Item = (usize, Option<f64>)>) -> String {
        let mut path = String::new();
        for (i, value) in points {
            let command = if path.is_empty() { 'M' } else { 'L' };
            let _ = write!(path, "{command}{:.1},{:.1} ", self.x(i), self.y(value.unwrap_or(0.0)));
        }
        path.trim_end().to_string()
    }
}

/// Runs of consecutive indices below `n` where `value` is something.
fn stretches<T>(n: usize, value: impl Fn(usize) -> Option<T>) -> Vec<Vec<usize>> {
    let mut all: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in 0..n {
        match value(i) {
            Some(_) => current.push(i),
            None if !current.is_empty() => all.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        all.push(current);
    }
    all
}

/// Why a run published nothing: its recorded error, or for a run that
/// recorded none what its outcome says.
fn reason<'a>(night: &'a Night) -> Option<&'a str> {
    match (night.run.record.error.as_deref(), night.run.outcome.as_str()) {
        (Some(error), _) => Some(error),
        (None, "died") => Some("no end recorded: the process died or its machine went down"),
        (None, "interrupted") => Some("stopped by a signal"),
        _ => None,
    }
}

/// The rows a run scored: its summary's (a rejected run's too: scored, not
/// published), or for a record from before summaries its rows less the
/// quarantined; nothing for a run that did not finish.
fn rows_scored(night: &Night) -> Option<f64> {
    let record = &night.run.record;
    match &record.summary {
        Some(summary) => Some(summary.rows_scored as f64),
        None if night.failed => None,
        None => record
            .rows
            .map(|rows| rows.saturating_sub(record.rows_quarantined.unwrap_or(0)) as f64),
    }
}

/// The same value on every night, or nothing (a line drawn across nights
/// must hold for all of them).
fn same_everywhere<T: PartialEq + Copy>(mut values: impl Iterator<Item = Option<T>>) -> Option<T> {
    let first = values.next()??;
    values.all(|v| v == Some(first)).then_some(first)
}

/// A y-axis number: thousands grouped for counts, four digits otherwise.
fn axis_number(value: f64) -> String {
    if value.abs() >= 1000.0 {
        fmt_count(Some(value))
    } else {
        fmt_sig(value)
    }
}

// ---------------------------------------------------------------------------------------------
// The table: a line per run, newest first.

fn runs_table(nights: &[Night]) -> String {
    let mut html = String::from(
        "<h2 id=\"runs-section\">Run by run</h2>\n<div class=\"wide\"><table id=\"runs\"><thead><tr>\
         <th>Started (UTC)</th><th>Run</th><th>Outcome</th><th>Model</th>\
         <th class=\"num\">Rows scored</th><th class=\"num\">Quarantined</th><th class=\"num\">Flagged</th>\
         <th class=\"num\">Wall s</th><th class=\"num\">Score mean</th><th class=\"num\">p10 · p50 · p90</th>\
         <th>Largest drift</th><th>Rules failed / warned</th></tr></thead>\n<tbody>\n",
    );
    for night in nights.iter().rev() {
        let r = &night.run.record;
        let summary = r.summary.as_ref();
        let mut classes = Vec::new();
        if night.model_changed {
            classes.push("version-change");
        }
        if night.failed {
            classes.push("failed");
        }
        let reason = reason(night)
            .map(|e| format!("<br><span class=\"muted\">{}</span>", esc(e)))
            .unwrap_or_default();
        let sla = match (&r.sla_missed[..], summary.and_then(|s| s.max_duration_seconds)) {
            ([], Some(limit)) => format!(" <span class=\"muted\">/ {limit}</span>"),
            ([], None) => String::new(),
            (missed, _) => format!(" <span class=\"badge bad\">missed {}</span>", esc(&missed.join(", "))),
        };
        let seconds = summary.and_then(|s| s.wall_seconds).or(night.run.seconds);
        let score = summary.and_then(|s| s.score.as_ref());
        let deciles = score
            .filter(|s| s.deciles.len() == 9)
            .map(|s| {
                format!(
                    "{} · {} · {}",
                    fmt_sig(s.deciles[0]),
                    fmt_sig(s.deciles[4]),
                    fmt_sig(s.deciles[8])
                )
            })
            .unwrap_or_else(|| MISSING.into());
        let drift = summary.and_then(|s| s.drift.as_ref()).map_or(MISSING.to_string(), |d| {
            let status = match d.status {
                Status::Pass => String::new(),
                Status::Warn => format!(" {}", badge(Some("warn"))),
                Status::Fail => format!(" {}", badge(Some("fail"))),
            };
            format!("<code>{}</code> {}{status}", esc(&d.column), fmt_sig(d.psi))
        });
        let rules = summary.map_or(MISSING.to_string(), |s| {
            let failed: Vec<&String> = s.rules_failed.iter().chain(&s.guards_failed).collect();
            let warned: Vec<&String> = s.rules_warned.iter().chain(&s.guards_warned).collect();
            let list = |ids: &[&String]| {
                ids.iter()
                    .map(|id| format!("<code>{}</code>", esc(id)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            match (failed.is_empty(), warned.is_empty()) {
                (true, true) => "none".to_string(),
                (false, true) => list(&failed),
                (true, false) => format!("— / {}", list(&warned)),
                (false, false) => format!("{} / {}", list(&failed), list(&warned)),
            }
        });
        let model = match night.model_changed {
            true => format!(
                "<strong>{}</strong> <span class=\"badge\">changed</span>",
                esc(&night.model)
            ),
            false => esc(&night.model),
        };
        let _ = writeln!(
            html,
            "<tr class=\"{}\" data-run=\"{}\"><td>{}</td><td><code>{}</code></td><td>{}{reason}</td><td>{model}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}{sla}</td><td class=\"num\">{}</td><td class=\"num\">{deciles}</td>\
             <td>{drift}</td><td>{rules}</td></tr>",
            classes.join(" "),
            esc(&r.run_id),
            esc(r.started_at.replacen('T', " ", 1).trim_end_matches('Z')),
            esc(&r.run_id),
            badge(Some(&night.run.outcome)),
            fmt_count(rows_scored(night)),
            fmt_count(r.rows_quarantined.map(|q| q as f64)),
            fmt_count(summary.map(|s| s.rows_flagged as f64)),
            seconds.map_or(MISSING.to_string(), fmt_sig),
            fmt_opt_sig(score.and_then(|s| s.mean)),
        );
    }
    html + "</tbody></table></div>\n"
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::commit::{DriftSummary, RunSummary, ScoreSummary};
    use crate::commit::{LedgerRecord, RunStatus, WriteMode};

    /// Night `i` of a run history: succeeded unless told, model 1.0.0.
    fn night(i: u64, outcome: &str, summary: Option<RunSummary>) -> RunEntry {
        let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_000_000 + i * 86_400);
        let mut record = LedgerRecord::starting(
            &format!("run-{i:03}"),
            "",
            start,
            WriteMode::Overwrite,
            Path::new("/lake"),
        );
        record.status = RunStatus::Succeeded;
        record.model_name = "churn".into();
        record.model_version = Some("1.0.0".into());
        record.model_sha256 = "ab".repeat(32);
        record.rows = Some(1000);
        record.rows_quarantined = Some(i % 3);
        record.summary = summary;
        RunEntry {
            record,
            outcome: outcome.into(),
            seconds: Some(60.0),
        }
    }

    fn summary(psi: f64, status: Status) -> RunSummary {
        RunSummary {
            rows_scored: 1000,
            rows_flagged: 2,
            wall_seconds: Some(61.5),
            max_duration_seconds: Some(600),
            score: Some(ScoreSummary {
                column: "score".into(),
                mean: Some(0.31),
                deciles: (1..10).map(|d| f64::from(d) / 10.0).collect(),
            }),
            drift: Some(DriftSummary {
                verdict: status,
                column: "spend_30d".into(),
                psi,
                status,
                psi_warn: Some(0.1),
                psi_fail: Some(0.25),
                moved: Vec::new(),
            }),
            rules_failed: Vec::new(),
            rules_warned: vec!["age.range".into()],
            guards_failed: Vec::new(),
            guards_warned: Vec::new(),
        }
    }

    fn attribute(svg: &str, name: &str) -> usize {
        let start = svg.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        svg[start..start + svg[start..].find('"').unwrap()].parse().unwrap()
    }

    #[test]
    fn every_plot_counts_what_it_draws() {
        let mut runs: Vec<RunEntry> = (0..10)
            .map(|i| night(i, "succeeded", Some(summary(0.01, Status::Pass))))
            .collect();
        runs[4] = night(4, "rejected", Some(summary(0.4, Status::Fail)));
        runs[4].record.error = Some("drift of `spend_30d` (PSI 0.400, JS 0.300)".into());
        runs[5] = night(5, "failed", None);
        runs[5].record.error = Some("cannot decode column `age`".into());
        for run in &mut runs[7..] {
            run.record.model_version = Some("2.0.0".into());
        }
        let page = render("/lake/scores", &runs, 12);
        assert!(page.contains("The last 10 of 12 runs"));
        let plots: Vec<&str> = page.split("<svg class=\"trend\"").skip(1).collect();
        assert_eq!(plots.len(), 6);
        for svg in &plots {
            let svg = &svg[..svg.find("</svg>").unwrap()];
            assert_eq!(
                attribute(svg, "data-points"),
                svg.matches("<circle class=\"point").count()
            );
            assert_eq!(attribute(svg, "data-version-changes"), 1);
            assert_eq!(svg.matches("<line class=\"version-change\"").count(), 1);
            assert_eq!(attribute(svg, "data-failed-runs"), 2);
            assert_eq!(svg.matches("<text class=\"failed-run\"").count(), 2);
            assert_eq!(attribute(svg, "data-bars"), svg.matches("<rect class=\"bar").count());
        }
        // Rows scored: every run but the failed one, which has no summary
        // (the rejected run scored its rows, and published none).
        assert_eq!(attribute(plots[0], "data-points"), 9);
        // The drift plot names the failing feature once, at the rejected run.
        assert_eq!(plots[4].matches("class=\"mark-label\"").count(), 1);
        assert!(plots[4].contains(">spend_30d<") && plots[4].contains("warn 0.1"));
        // The wall-time plot has the SLA line.
        assert!(plots[2].contains(">SLA 600 s<"));
        // The table: newest first, the version change and the failures marked, reasons given.
        let table = &page[page.find("id=\"runs\"").unwrap()..];
        assert!(table.find("run-009").unwrap() < table.find("run-000").unwrap());
        assert!(table.contains("<tr class=\"version-change\" data-run=\"run-007\">"));
        assert!(table.contains("<tr class=\"failed\" data-run=\"run-005\">"));
        assert!(table.contains("cannot decode column `age`"));
        assert!(table.contains("<strong>churn 2.0.0</strong>"));
        assert!(table.contains("0.1 · 0.5 · 0.9"));
    }

    #[test]
    fn runs_recorded_before_summaries_still_draw() {
        let runs: Vec<RunEntry> = (0..3).map(|i| night(i, "succeeded", None)).collect();
        let page = render("s3://bucket/scores", &runs, 3);
        let plots: Vec<&str> = page.split("<svg class=\"trend\"").skip(1).collect();
        // Rows from the ledger (rows less quarantined), wall time from its instants.
        assert_eq!(attribute(plots[0], "data-points"), 3);
        assert!(plots[0].contains("run-001: 999 scored</title>"), "{}", plots[0]);
        assert_eq!(attribute(plots[2], "data-points"), 3);
        assert_eq!(
            attribute(plots[3], "data-points"),
            0,
            "no score deciles without summaries"
        );
        let row = &page[page.find("data-run=\"run-001\"").unwrap()..];
        assert!(
            row[..row.find("</tr>").unwrap()].contains("<td class=\"num\">999</td>"),
            "{row}"
        );
    }

    #[test]
    fn a_run_failed_by_drift_is_marked_even_when_its_largest_psi_passes() {
        let mut runs: Vec<RunEntry> = (0..3)
            .map(|i| night(i, "succeeded", Some(summary(0.01, Status::Pass))))
            .collect();
        // The score's drift rejected night 2; its most drifted feature passed.
        let mut rejected = summary(0.05, Status::Pass);
        if let Some(drift) = rejected.drift.as_mut() {
            drift.verdict = Status::Fail;
            drift.moved = vec!["score".into()];
        }
        runs[2] = night(2, "rejected", Some(rejected));
        let page = render("/lake/scores", &runs, 3);
        let plot = &page[page.find("id=\"drift\"").unwrap()..];
        let plot = &plot[..plot.find("</svg>").unwrap()];
        assert_eq!(plot.matches("class=\"point fail\"").count(), 1);
        assert!(
            plot.contains("class=\"mark-label\" x=") && plot.contains(">score</text>"),
            "{plot}"
        );
    }

    #[test]
    fn lines_are_drawn_only_for_limits_every_night_had() {
        let mut runs: Vec<RunEntry> = (0..3)
            .map(|i| night(i, "succeeded", Some(summary(0.01, Status::Pass))))
            .collect();
        if let Some(s) = runs[1].record.summary.as_mut() {
            s.max_duration_seconds = Some(1200);
        }
        let page = render("/lake/scores", &runs, 3);
        assert!(!page.contains(">SLA "), "the SLA changed: no line");
        assert!(page.contains(">warn 0.1<") && page.contains(">fail 0.25<"));
    }

    #[test]
    fn a_model_whose_bytes_alone_changed_is_named_by_its_digest_and_a_died_run_says_so() {
        let mut runs: Vec<RunEntry> = (0..3).map(|i| night(i, "succeeded", None)).collect();
        runs[1].record.model_sha256 = "cd".repeat(32);
        runs[2] = night(2, "died", None);
        runs[2].record.model_sha256 = "cd".repeat(32);
        let page = render("/lake/scores", &runs, 3);
        assert!(page.contains("<strong>churn 1.0.0 (cdcdcdcdcdcd)</strong>"), "{page}");
        assert!(page.contains("no end recorded: the process died"));
    }

    #[test]
    fn hostile_text_is_escaped() {
        let mut run = night(1, "failed", None);
        run.record.error = Some("<script>alert(1)</script>".into());
        run.record.model_name = "<img src=x onerror=alert(2)>".into();
        let mut other = night(2, "rejected", Some(summary(9.0, Status::Fail)));
        if let Some(drift) = other.record.summary.as_mut().and_then(|s| s.drift.as_mut()) {
            drift.column = "</code><script>alert(3)</script>".into();
        }
        let page = render("<b>out</b>", &[run, other], 2);
        assert!(!page.contains("<script>alert") && !page.contains("<img") && !page.contains("<b>out"));
        assert_eq!(page.matches("<script").count(), 1, "only the self-check script");
    }

    #[test]
    fn an_empty_history_still_renders_a_page() {
        let page = render("/lake/scores", &[], 0);
        assert!(page.contains("No runs.") && page.contains("id=\"runs\""));
        assert!(page.trim_end().ends_with("</html>"));
    }
}
