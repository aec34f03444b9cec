//! HTML run report: one static page (inline CSS and SVG, no network, no row-level data) built from the JSON run report's aggregates.
//!
//! The page is meant to be read by a person in a minute: status first, then what failed, then the
//! numbers behind it. It is rendered from the JSON report (not from the run's internals) so that a
//! report written by any version of lakescore can be turned into a page, and so that every section
//! tolerates being absent, null or half-filled.

use std::fmt::Write as _;

use serde_json::Value;

/// What a missing or null number prints as.
pub(crate) const MISSING: &str = "—";

/// Renders the whole page for one JSON run report.
pub fn render(report: &Value) -> String {
    let mut page = String::with_capacity(32 * 1024);
    page.push_str(&document_head(report));
    page.push_str("<body>\n<main>\n");
    page.push_str(&header(report));
    page.push_str(&summary_section(report));
    page.push_str(&checks_section(section(report, "checks")));
    page.push_str(&guards_section(section(report, "guards")));
    page.push_str(&histogram_section(section(report, "score_histogram")));
    page.push_str(&drift_section(section(report, "drift")));
    page.push_str(&moved_distributions_section(section(report, "drift")));
    if let Some(comparison) = section(report, "comparison") {
        page.push_str(&comparison_section(comparison));
    }
    page.push_str(FOOTER);
    page.push_str("</main>\n");
    page.push_str(SELF_CHECK_SCRIPT);
    page.push_str("</body>\n</html>\n");
    page
}

// ---------------------------------------------------------------------------------------------
// Page frame

fn document_head(report: &Value) -> String {
    let model = section(report, "model")
        .and_then(|m| str_at(m, "name"))
        .unwrap_or("unknown model");
    let run_id = str_at(report, "run_id").unwrap_or("unknown run");
    page_head(&format!("lakescore report: {model} — {run_id}"), "")
}

/// Every lakescore page's head: `title` (escaped here), [`STYLE`] then
/// `more_style`. The Content-Security-Policy forbids every fetch, so a page
/// that slipped in an external resource fails loudly in a browser (and in
/// the browser test) instead of phoning home.
pub(crate) fn page_head(title: &str, more_style: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n\
         <title>{}</title>\n<style>{STYLE}{more_style}</style>\n</head>\n",
        esc(title)
    )
}

pub(crate) const STYLE: &str = "
:root { --ok: #15803d; --ok-bg: #dcfce7; --warn: #b45309; --warn-bg: #fef3c7; --bad: #b91c1c; --bad-bg: #fee2e2;
  --muted: #6b7280; --line: #e5e7eb; }
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #111827; margin: 0;
  background: #f9fafb; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
header h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
.sub, .muted { color: var(--muted); }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); width: 100%; }
th, td { text-align: left; padding: 5px 9px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv { width: auto; } table.kv th { width: 11em; }
code { font: 12px ui-monospace, monospace; overflow-wrap: anywhere; }
td:first-child code { white-space: nowrap; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
  background: #e5e7eb; color: #374151; vertical-align: middle; }
.badge.ok { background: var(--ok-bg); color: var(--ok); }
.badge.warn { background: var(--warn-bg); color: var(--warn); }
.badge.bad { background: var(--bad-bg); color: var(--bad); }
h1 .badge { font-size: 14px; padding: 2px 12px; }
.verdicts .badge { margin-right: 10px; }
svg { background: #fff; border: 1px solid var(--line); max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #374151; }
svg .grid { stroke: var(--line); } svg .axis { stroke: #9ca3af; }
svg .current { fill: #2563eb; } svg .reference { fill: #9ca3af; }
footer { margin-top: 32px; padding-top: 12px; border-top: 1px solid var(--line); color: var(--muted); font-size: 12px; }
";

const FOOTER: &str = "<footer>This page contains aggregates only: counts, shares and summary statistics from the \
run report, plus the few example keys that rule checks cite. No scores or feature values of individual rows. \
It loads nothing from the network.</footer>\n";

/// The browser test cannot see a page; this script looks at the laid-out page and leaves its
/// verdict in `data-rendered`, which `--dump-dom` then carries out.
const SELF_CHECK_SCRIPT: &str = r#"<script>
(function () {
  var root = document.documentElement;
  function verdict() {
    if (!document.getElementById("summary")) return "broken:summary table missing";
    var svgs = document.querySelectorAll("svg");
    for (var i = 0; i < svgs.length; i++) {
      // clientWidth/Height leave out the border, which alone would give a collapsed chart a box.
      if (!(svgs[i].clientWidth > 0 && svgs[i].clientHeight > 0)) return "broken:svg " + i + " has an empty box";
      var drawn = svgs[i].getBBox();
      if (!(drawn.width > 0 && drawn.height > 0)) return "broken:svg " + i + " draws nothing";
      var want = Number(svgs[i].getAttribute("data-bars"));
      var got = svgs[i].querySelectorAll("rect.bar").length;
      if (want !== got) return "broken:svg " + i + " drew " + got + " bars, expected " + want;
    }
    return "ok";
  }
  try { root.dataset.rendered = verdict(); } catch (e) { root.dataset.rendered = "broken:" + e; }
})();
</script>
"#;

fn header(report: &Value) -> String {
    let model = section(report, "model");
    let name = model.and_then(|m| str_at(m, "name")).unwrap_or("unknown model");
    let command = str_at(report, "command").unwrap_or("run");
    let run_id = str_at(report, "run_id").unwrap_or(MISSING);
    let finished = str_at(report, "finished_at").unwrap_or(MISSING);
    format!(
        "<header>\n<h1>{} {}</h1>\n\
         <p class=\"sub\">lakescore {} · run <code>{}</code> · finished {}</p>\n{}</header>\n",
        esc(name),
        badge(str_at(report, "status")),
        esc(command),
        esc(run_id),
        esc(finished),
        verdict_line(report)
    )
}

/// One line with the three verdicts, so the reader knows which section to look at first.
fn verdict_line(report: &Value) -> String {
    let verdicts: Vec<String> = ["checks", "guards", "drift"]
        .iter()
        .map(|key| {
            let verdict = match section(report, key) {
                Some(part) => str_at(part, "verdict"),
                None => Some("not run"),
            };
            format!("{key} {}", badge(verdict))
        })
        .collect();
    format!("<p class=\"verdicts\">{}</p>\n", verdicts.join(" "))
}

// ---------------------------------------------------------------------------------------------
// Run summary

fn summary_section(report: &Value) -> String {
    let rows = num_at(report, "rows");
    let seconds = section(report, "wall_seconds").and_then(|w| num_at(w, "total"));
    let mut table = String::from("<h2>Run</h2>\n<table class=\"kv\" id=\"summary\">\n");
    let text_rows = [
        ("Command", str_at(report, "command")),
        ("Run ID", str_at(report, "run_id")),
        ("Started", str_at(report, "started_at")),
        ("Finished", str_at(report, "finished_at")),
    ];
    for (label, value) in text_rows {
        table.push_str(&kv_row(label, &esc(value.unwrap_or(MISSING))));
    }
    table.push_str(&kv_row("Status", &badge(str_at(report, "status"))));
    table.push_str(&kv_row("Model", &model_line(section(report, "model"))));
    table.push_str(&kv_row("Input", &code_or_missing(str_at(report, "input"))));
    table.push_str(&kv_row("Output", &code_or_missing(str_at(report, "output"))));
    table.push_str(&kv_row("Rows", &fmt_count(rows)));
    for (label, key) in [
        ("Scored", "rows_scored"),
        ("Quarantined", "rows_quarantined"),
        ("Flagged", "rows_flagged"),
    ] {
        table.push_str(&kv_row(label, &count_with_share(num_at(report, key), rows)));
    }
    table.push_str(&kv_row(
        "Wall time",
        &seconds.map_or(MISSING.to_string(), |s| format!("{} s", fmt_sig(s))),
    ));
    table.push_str(&kv_row("Throughput", &throughput(rows, seconds)));
    table.push_str("</table>\n");
    table
}

fn kv_row(label: &str, value_html: &str) -> String {
    format!("<tr><th>{label}</th><td>{value_html}</td></tr>\n")
}

/// "churn 1.2.0 (xgboost-json, sha256 1a2b3c4d5e6f)": the short hash is enough to tell models apart.
fn model_line(model: Option<&Value>) -> String {
    let Some(model) = model else { return MISSING.to_string() };
    let mut line = esc(str_at(model, "name").unwrap_or("unnamed"));
    if let Some(version) = str_at(model, "version") {
        let _ = write!(line, " {}", esc(version));
    }
    let details: Vec<String> = [
        str_at(model, "format").map(esc),
        str_at(model, "sha256").map(|sha| format!("sha256 <code>{}</code>", esc(short_sha(sha)))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !details.is_empty() {
        let _ = write!(line, " ({})", details.join(", "));
    }
    line
}

fn short_sha(sha: &str) -> &str {
    sha.char_indices().nth(12).map_or(sha, |(end, _)| &sha[..end])
}

fn code_or_missing(text: Option<&str>) -> String {
    text.map_or(MISSING.to_string(), |t| format!("<code>{}</code>", esc(t)))
}

/// "1,000 (0.1%)": the share tells at a glance whether a count matters.
fn count_with_share(count: Option<f64>, rows: Option<f64>) -> String {
    match (count, rows) {
        (Some(count), Some(rows)) if rows > 0.0 => format!("{} ({})", fmt_count(Some(count)), fmt_pct(count / rows)),
        _ => fmt_count(count),
    }
}

fn throughput(rows: Option<f64>, seconds: Option<f64>) -> String {
    match (rows, seconds) {
        (Some(rows), Some(seconds)) if seconds > 0.0 && rows.is_finite() => {
            let rate = rows / seconds;
            let rate = if rate >= 100.0 {
                fmt_count(Some(rate))
            } else {
                fmt_sig(rate)
            };
            format!("{rate} rows/s")
        }
        _ => MISSING.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Checks and guards

fn checks_section(checks: Option<&Value>) -> String {
    let mut html = section_heading("Rule checks", "rules", checks);
    let Some(checks) = checks else { return html + NOT_RUN };
    let mut rules: Vec<&Value> = list_at(checks, "rules").iter().collect();
    if rules.is_empty() {
        return html + "<p class=\"muted\">No rules.</p>\n";
    }
    // Problems first: a reader should not have to scan a hundred passing rules to find the one that failed.
    rules.sort_by_key(|rule| status_rank(str_at(rule, "status")));
    html.push_str(&table_open(
        "rules",
        &[
            "Rule", "Kind", "Target", "Policy", "Status", "#Checked", "#Failing", "Detail", "Examples",
        ],
    ));
    for rule in rules {
        html.push_str(&rule_row(rule));
    }
    html + "</tbody></table>\n"
}

fn rule_row(rule: &Value) -> String {
    let examples: Vec<&str> = list_at(rule, "examples").iter().filter_map(Value::as_str).collect();
    let cells = [
        format!("<td><code>{}</code></td>", esc(str_at(rule, "id").unwrap_or(MISSING))),
        text_cell(str_at(rule, "kind")),
        text_cell(str_at(rule, "target")),
        text_cell(str_at(rule, "policy")),
        status_cell(str_at(rule, "status")),
        num_cell(&fmt_count(num_at(rule, "checked"))),
        num_cell(&fmt_count(num_at(rule, "failing"))),
        text_cell(str_at(rule, "detail")),
        format!("<td><code>{}</code></td>", esc(&examples.join(", "))),
    ];
    format!("<tr>{}</tr>\n", cells.concat())
}

fn guards_section(guards: Option<&Value>) -> String {
    let mut html = section_heading("Guards", "guards", guards);
    let Some(guards) = guards else { return html + NOT_RUN };
    let mut list: Vec<&Value> = list_at(guards, "guards").iter().collect();
    if list.is_empty() {
        return html + "<p class=\"muted\">No guards.</p>\n";
    }
    list.sort_by_key(|guard| status_rank(str_at(guard, "status")));
    html.push_str(&table_open(
        "guards",
        &["Guard", "Status", "#Value", "#Bound", "Detail"],
    ));
    for guard in list {
        let cells = [
            format!("<td><code>{}</code></td>", esc(str_at(guard, "id").unwrap_or(MISSING))),
            status_cell(str_at(guard, "status")),
            num_cell(&display_value(guard.get("value"))),
            num_cell(&display_value(guard.get("bound"))),
            text_cell(str_at(guard, "detail")),
        ];
        let _ = writeln!(html, "<tr>{}</tr>", cells.concat());
    }
    html + "</tbody></table>\n"
}

const NOT_RUN: &str = "<p class=\"muted\">Not run.</p>\n";

/// Heading with the section's verdict badge; "not run" when the section is absent.
fn section_heading(title: &str, anchor: &str, part: Option<&Value>) -> String {
    let verdict = match part {
        Some(part) => badge(str_at(part, "verdict")),
        None => badge(Some("not run")),
    };
    format!("<h2 id=\"{anchor}-section\">{title} {verdict}</h2>\n")
}

/// Headers starting with `#` are numeric columns: right-aligned.
fn table_open(id: &str, headers: &[&str]) -> String {
    let cells: String = headers
        .iter()
        .map(|h| match h.strip_prefix('#') {
            Some(h) => format!("<th class=\"num\">{h}</th>"),
            None => format!("<th>{h}</th>"),
        })
        .collect();
    format!("<table id=\"{id}\">\n<thead><tr>{cells}</tr></thead>\n<tbody>\n")
}

fn text_cell(text: Option<&str>) -> String {
    format!("<td>{}</td>", esc(text.unwrap_or(MISSING)))
}

/// `content` is already HTML (formatted by us, never raw report text).
fn num_cell(content: &str) -> String {
    format!("<td class=\"num\">{content}</td>")
}

fn status_cell(status: Option<&str>) -> String {
    format!("<td>{}</td>", badge(status))
}

/// Guards carry values and bounds of any JSON type; show each compactly and escaped.
fn display_value(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => MISSING.to_string(),
        Some(Value::Number(n)) => n.as_f64().map_or(MISSING.to_string(), fmt_sig),
        Some(Value::String(s)) => esc(s),
        Some(other) => esc(&other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Score histogram

const SVG_W: f64 = 720.0;
const SVG_H: f64 = 270.0;
const PLOT_LEFT: f64 = 64.0;
const PLOT_RIGHT: f64 = 16.0;
const PLOT_TOP: f64 = 34.0;
const PLOT_BOTTOM: f64 = 46.0;

/// The histogram as the chart needs it: shares per bin, reference only when it lines up.
struct Histogram {
    column: String,
    edges: Option<Vec<f64>>,
    /// Names of the bins (a drift chart's ranges or categories), drawn under
    /// each bin instead of edges.
    bin_names: Option<Vec<String>>,
    current: Vec<f64>,
    reference: Option<Vec<f64>>,
}

fn histogram_section(histogram: Option<&Value>) -> String {
    let html = String::from("<h2 id=\"histogram-section\">Score distribution</h2>\n");
    let Some(histogram) = histogram.map(Histogram::from_json) else {
        return html + "<p class=\"muted\">Not available.</p>\n";
    };
    if histogram.current.is_empty() {
        return html + "<p class=\"muted\">No histogram data.</p>\n";
    }
    html + &histogram_svg(&histogram, "histogram")
}

impl Histogram {
    fn from_json(value: &Value) -> Histogram {
        let current = shares(value.get("current"));
        let reference = value.get("reference").filter(|r| !r.is_null()).map(|r| shares(Some(r)));
        // A reference with a different bin count cannot be drawn next to the current bars.
        let reference = reference.filter(|r| r.len() == current.len());
        let edges: Vec<f64> = list_at(value, "edges")
            .iter()
            .map(|e| e.as_f64().unwrap_or(f64::NAN))
            .collect();
        let edges = (edges.len() == current.len() + 1 && edges.iter().all(|e| e.is_finite())).then_some(edges);
        let column = str_at(value, "column").unwrap_or("score").to_string();
        Histogram {
            column,
            edges,
            bin_names: None,
            current,
            reference,
        }
    }
}

/// Bin shares; a null or negative share draws as an empty bar rather than breaking the chart.
fn shares(value: Option<&Value>) -> Vec<f64> {
    let list = value.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    list.iter()
        .map(|v| v.as_f64().filter(|x| x.is_finite() && *x > 0.0).unwrap_or(0.0))
        .collect()
}

fn histogram_svg(h: &Histogram, id: &str) -> String {
    let top = h
        .current
        .iter()
        .chain(h.reference.iter().flatten())
        .copied()
        .fold(0.0, f64::max);
    let y_max = nice_ceiling(top);
    let bars = h.current.len() * if h.reference.is_some() { 2 } else { 1 };
    let label = format!("Histogram of {}: share of rows per bin", h.column);
    let mut svg = format!(
        "<svg id=\"{}\" width=\"{SVG_W}\" height=\"{SVG_H}\" viewBox=\"0 0 {SVG_W} {SVG_H}\" role=\"img\" \
         aria-label=\"{}\" data-bars=\"{bars}\">\n",
        esc(id),
        esc(&label)
    );
    svg.push_str(&y_axis(y_max));
    svg.push_str(&bars_svg(h, y_max));
    svg.push_str(&x_axis(h));
    svg.push_str(&legend(h.reference.is_some()));
    svg + "</svg>\n"
}

fn plot_width() -> f64 {
    SVG_W - PLOT_LEFT - PLOT_RIGHT
}

fn plot_height() -> f64 {
    SVG_H - PLOT_TOP - PLOT_BOTTOM
}

fn plot_bottom() -> f64 {
    SVG_H - PLOT_BOTTOM
}

/// Smallest of 1, 2, 2.5, 5 times a power of ten at or above `x`, so the y ticks read as round numbers.
pub(crate) fn nice_ceiling(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|c| *c >= x * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

/// Four steps for a top of 2×10^k, five otherwise, so every tick is a round number (0.5, not 0.625).
fn y_tick_count(y_max: f64) -> u32 {
    let mantissa = y_max / 10f64.powf(y_max.log10().floor());
    if (mantissa - 2.0).abs() < 1e-6 { 4 } else { 5 }
}

fn y_axis(y_max: f64) -> String {
    let ticks = y_tick_count(y_max);
    let mut svg = String::new();
    for step in 0..=ticks {
        let fraction = f64::from(step) / f64::from(ticks);
        let value = y_max * fraction;
        let y = plot_bottom() - plot_height() * fraction;
        let _ = writeln!(
            svg,
            "<line class=\"grid\" x1=\"{PLOT_LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            SVG_W - PLOT_RIGHT,
            PLOT_LEFT - 6.0,
            y + 4.0,
            fmt_pct(value)
        );
    }
    let mid = PLOT_TOP + plot_height() / 2.0;
    let _ = writeln!(
        svg,
        "<text x=\"14\" y=\"{mid:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {mid:.1})\">\
         share of rows</text>"
    );
    svg
}

fn bars_svg(h: &Histogram, y_max: f64) -> String {
    let bin_w = plot_width() / h.current.len() as f64;
    let series: Vec<(&str, &Vec<f64>)> = std::iter::once(("current", &h.current))
        .chain(h.reference.as_ref().map(|r| ("reference", r)))
        .collect();
    // Bars of one bin sit side by side in the middle 80% of the bin, leaving a gap between bins.
    let bar_w = bin_w * 0.8 / series.len() as f64;
    let mut svg = String::new();
    for (bin, _) in h.current.iter().enumerate() {
        for (slot, (class, values)) in series.iter().enumerate() {
            let share = values[bin];
            let height = (share / y_max * plot_height()).clamp(0.0, plot_height());
            let x = PLOT_LEFT + bin_w * bin as f64 + bin_w * 0.1 + bar_w * slot as f64;
            let _ = writeln!(
                svg,
                "<rect class=\"bar {class}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{height:.1}\">\
                 <title>{class} {}: {}</title></rect>",
                plot_bottom() - height,
                esc(&bin_label(h, bin)),
                fmt_pct(share)
            );
        }
    }
    svg
}

fn bin_label(h: &Histogram, bin: usize) -> String {
    if let Some(name) = h.bin_names.as_ref().and_then(|names| names.get(bin)) {
        return name.clone();
    }
    match &h.edges {
        Some(edges) => format!("[{}, {})", fmt_sig(edges[bin]), fmt_sig(edges[bin + 1])),
        None => format!("bin {}", bin + 1),
    }
}

/// Labels bin edges (or bin numbers when the edges are unusable), thinned so they never overlap.
fn x_axis(h: &Histogram) -> String {
    let bins = h.current.len();
    let bin_w = plot_width() / bins as f64;
    let step = bins.div_ceil(10).max(1);
    let mut svg = format!(
        "<line class=\"axis\" x1=\"{PLOT_LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\n",
        SVG_W - PLOT_RIGHT,
        plot_bottom(),
        plot_bottom()
    );
    if let Some(names) = &h.bin_names {
        // A name under each bin's middle; a range too long for the bin's
        // width on two lines, at its dash; anything else cut to fit.
        let fits = ((bin_w / 6.0) as usize).max(3);
        let cut = |text: &str| -> String {
            match text.chars().count() > fits {
                true => text.chars().take(fits - 1).chain(['…']).collect(),
                false => text.to_string(),
            }
        };
        for (bin, name) in names.iter().enumerate().take(bins) {
            let middle = PLOT_LEFT + bin_w * (bin as f64 + 0.5);
            let lines: Vec<String> = match (name.chars().count() > fits, name.split_once('–')) {
                (true, Some((low, high))) => vec![cut(&format!("{low}–")), cut(high)],
                _ => vec![cut(name)],
            };
            let _ = write!(
                svg,
                "<text x=\"{middle:.1}\" y=\"{:.1}\" text-anchor=\"middle\">",
                plot_bottom() + 15.0
            );
            for (i, line) in lines.iter().enumerate() {
                let _ = write!(
                    svg,
                    "<tspan x=\"{middle:.1}\" dy=\"{}\">{}</tspan>",
                    if i == 0 { 0 } else { 12 },
                    esc(line)
                );
            }
            svg.push_str("</text>\n");
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            PLOT_LEFT + plot_width() / 2.0,
            SVG_H - 8.0,
            esc(&h.column)
        );
        return svg;
    }
    for edge in (0..=bins).filter(|e| e % step == 0) {
        let label = match &h.edges {
            Some(edges) => fmt_sig(edges[edge]),
            None => edge.to_string(),
        };
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            PLOT_LEFT + bin_w * edge as f64,
            plot_bottom() + 15.0
        );
    }
    let title = if h.edges.is_some() {
        h.column.clone()
    } else {
        format!("{} (bin)", h.column)
    };
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        PLOT_LEFT + plot_width() / 2.0,
        SVG_H - 8.0,
        esc(&title)
    );
    svg
}

fn legend(with_reference: bool) -> String {
    let entries: &[&str] = if with_reference {
        &["current", "reference"]
    } else {
        &["current"]
    };
    let mut svg = String::new();
    for (i, name) in entries.iter().enumerate() {
        let x = SVG_W - PLOT_RIGHT - 190.0 + 95.0 * i as f64;
        let _ = writeln!(
            svg,
            "<rect class=\"{name}\" x=\"{x:.1}\" y=\"10\" width=\"12\" height=\"12\"/>\
             <text x=\"{:.1}\" y=\"20\">{name}</text>",
            x + 17.0
        );
    }
    svg
}

// ---------------------------------------------------------------------------------------------
// Drift

fn drift_section(drift: Option<&Value>) -> String {
    let mut html = section_heading("Drift", "drift", drift);
    let Some(drift) = drift else { return html + NOT_RUN };
    if let Some(reference) = str_at(drift, "reference") {
        let _ = writeln!(html, "<p class=\"muted\">Reference: {}</p>", esc(reference));
    }
    let mut columns: Vec<&Value> = list_at(drift, "columns").iter().collect();
    if columns.is_empty() {
        return html + "<p class=\"muted\">No columns.</p>\n";
    }
    // Most drifted first; a column without a PSI sorts last.
    columns.sort_by(|a, b| psi_key(b).total_cmp(&psi_key(a)));
    html.push_str(&table_open(
        "drift",
        &[
            "Column",
            "Kind",
            "#PSI",
            "#PSI warn / fail",
            "#JS",
            "#JS warn / fail",
            "Status",
            "#Mean ref → cur",
            "#Nulls ref → cur",
        ],
    ));
    for column in columns {
        html.push_str(&drift_row(column));
    }
    html + "</tbody></table>\n"
}

/// The reference's and this run's distributions, drawn together over the
/// drift bins, for every feature whose drift warns or fails and for the
/// scores: how a column moved, not only how far.
fn moved_distributions_section(drift: Option<&Value>) -> String {
    let Some(drift) = drift else {
        return String::new();
    };
    let shown: Vec<&Value> = list_at(drift, "columns")
        .iter()
        .filter(|c| {
            let moved = matches!(str_at(c, "status"), Some("warn" | "fail"));
            (moved || str_at(c, "kind") == Some("score")) && c.get("distribution").is_some_and(|d| !d.is_null())
        })
        .collect();
    if shown.is_empty() {
        return String::new();
    }
    let mut html = String::from(
        "<h2 id=\"distributions-section\">How the distributions moved</h2>\n\
         <p class=\"muted\">Share of rows per drift bin: the reference (grey) against this run (blue), for every \
         feature whose drift warns or fails, and for the scores.</p>\n",
    );
    for (i, column) in shown.iter().enumerate() {
        let name = str_at(column, "name").unwrap_or("column");
        let distribution = &column["distribution"];
        let current = shares(distribution.get("current"));
        let reference = Some(shares(distribution.get("reference"))).filter(|r| r.len() == current.len());
        let names: Vec<String> = list_at(distribution, "labels")
            .iter()
            .map(|l| l.as_str().unwrap_or("").to_string())
            .collect();
        if current.is_empty() {
            continue;
        }
        let chart = Histogram {
            column: format!(
                "{name} ({}, PSI {})",
                str_at(column, "kind").unwrap_or("feature"),
                fmt_opt_sig(num_at(column, "psi"))
            ),
            edges: None,
            bin_names: (names.len() == current.len()).then_some(names),
            current,
            reference,
        };
        let _ = writeln!(html, "<h3>{} {}</h3>", esc(name), badge(str_at(column, "status")));
        html.push_str(&histogram_svg(&chart, &format!("distribution-{i}")));
    }
    html
}

/// Champion against challengers, for a run of several models.
fn comparison_section(comparison: &Value) -> String {
    let mut html = String::from("<h2 id=\"comparison-section\">Champion and challengers</h2>\n");
    let rows = num_at(comparison, "rows").unwrap_or(0.0);
    let sample = num_at(comparison, "sample_rows").unwrap_or(0.0);
    let _ = writeln!(
        html,
        "<p class=\"muted\">Quantiles and agreement on {sample} of {rows} rows{}.</p>",
        if comparison.get("exact").and_then(Value::as_bool) == Some(true) {
            ""
        } else {
            " (a hash-chosen sample)"
        }
    );
    html.push_str(&table_open(
        "distributions",
        &["Model", "Column", "#Mean", "#Std dev", "#Min", "#Median", "#Max"],
    ));
    for d in list_at(comparison, "distributions") {
        let median = list_at(d, "quantiles")
            .iter()
            .find(|q| num_at(q, "quantile") == Some(0.5))
            .and_then(|q| num_at(q, "score"));
        let _ = writeln!(
            html,
            "<tr>{}{}{}{}{}{}{}</tr>",
            text_cell(str_at(d, "model")),
            text_cell(str_at(d, "column")),
            num_cell(&fmt_opt_sig(num_at(d, "mean"))),
            num_cell(&fmt_opt_sig(num_at(d, "std_dev"))),
            num_cell(&fmt_opt_sig(num_at(d, "min"))),
            num_cell(&fmt_opt_sig(median)),
            num_cell(&fmt_opt_sig(num_at(d, "max"))),
        );
    }
    html.push_str("</tbody></table>\n");
    html.push_str(&table_open(
        "agreements",
        &[
            "Challenger",
            "Champion",
            "#Rank correlation",
            "#Top-decile agreement",
            "#Mean difference",
        ],
    ));
    for a in list_at(comparison, "agreements") {
        let _ = writeln!(
            html,
            "<tr>{}{}{}{}{}</tr>",
            text_cell(str_at(a, "challenger")),
            text_cell(str_at(a, "champion")),
            num_cell(&fmt_opt_sig(num_at(a, "rank_correlation"))),
            num_cell(&fmt_opt_sig(num_at(a, "top_decile_agreement"))),
            num_cell(&fmt_opt_sig(num_at(a, "mean_difference"))),
        );
    }
    html + "</tbody></table>\n"
}

fn psi_key(column: &Value) -> f64 {
    num_at(column, "psi")
        .filter(|p| !p.is_nan())
        .unwrap_or(f64::NEG_INFINITY)
}

fn drift_row(column: &Value) -> String {
    let sig = |key: &str| fmt_opt_sig(num_at(column, key));
    let pct = |key: &str| num_at(column, key).map_or(MISSING.to_string(), fmt_pct);
    let cells = [
        format!(
            "<td><code>{}</code></td>",
            esc(str_at(column, "name").unwrap_or(MISSING))
        ),
        text_cell(str_at(column, "kind")),
        num_cell(&sig("psi")),
        num_cell(&format!("{} / {}", sig("psi_warn"), sig("psi_fail"))),
        num_cell(&sig("js")),
        num_cell(&format!("{} / {}", sig("js_warn"), sig("js_fail"))),
        status_cell(str_at(column, "status")),
        num_cell(&format!("{} → {}", sig("reference_mean"), sig("current_mean"))),
        num_cell(&format!(
            "{} → {}",
            pct("reference_null_share"),
            pct("current_null_share")
        )),
    ];
    format!("<tr>{}</tr>\n", cells.concat())
}

// ---------------------------------------------------------------------------------------------
// Status badges

/// Colour class for a status word; unknown words get the neutral grey rather than a guess.
fn status_class(status: &str) -> &'static str {
    match status {
        "pass" | "succeeded" | "ok" => "ok",
        "warn" | "sla_missed" => "warn",
        "fail" | "failed" | "rejected" | "died" | "interrupted" => "bad",
        _ => "",
    }
}

pub(crate) fn badge(status: Option<&str>) -> String {
    let status = status.unwrap_or("unknown");
    format!("<span class=\"badge {}\">{}</span>", status_class(status), esc(status))
}

fn status_rank(status: Option<&str>) -> u8 {
    match status {
        Some("fail" | "failed" | "rejected") => 0,
        Some("warn") => 1,
        _ => 2,
    }
}

// ---------------------------------------------------------------------------------------------
// JSON access: every lookup tolerates absence, null and the wrong type.

/// `report[key]` when it is present and not null.
fn section<'a>(report: &'a Value, key: &str) -> Option<&'a Value> {
    report.get(key).filter(|v| !v.is_null())
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn num_at(value: &Value, key: &str) -> Option<f64> {
    value.get(key).and_then(Value::as_f64)
}

fn list_at<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

// ---------------------------------------------------------------------------------------------
// Text and number formatting

/// Escapes text for HTML element content and quoted attribute values alike.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Counts with thousands separators: "1,000,000".
pub(crate) fn fmt_count(count: Option<f64>) -> String {
    let Some(count) = count.filter(|c| c.is_finite()) else {
        return MISSING.to_string();
    };
    let rounded = count.round();
    let digits = format!("{:.0}", rounded.abs());
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if rounded < 0.0 {
        grouped.push('-');
    }
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

pub(crate) fn fmt_opt_sig(x: Option<f64>) -> String {
    x.map_or(MISSING.to_string(), fmt_sig)
}

/// Four significant digits ([`crate::util::short_number`]).
pub(crate) fn fmt_sig(x: f64) -> String {
    crate::util::short_number(x)
}

/// A share in [0, 1] as a percentage: 0.0123 -> "1.23%".
fn fmt_pct(share: f64) -> String {
    format!("{}%", fmt_sig(share * 100.0))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn full_report() -> Value {
        json!({
            "command": "score",
            "run_id": "20261126T093000Z-1a2b3c4d",
            "status": "succeeded",
            "started_at": "2026-11-26T09:30:00Z",
            "finished_at": "2026-11-26T09:30:02Z",
            "model": {"name": "churn", "version": "1.2.0", "format": "xgboost-json",
                      "sha256": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
            "input": "/lake/customers", "output": "/lake/scores",
            "rows": 1_000_000, "rows_scored": 999_000, "rows_quarantined": 1000, "rows_flagged": 20,
            "wall_seconds": {"total": 2.5},
            "checks": {"verdict": "warn", "rules": [
                {"id": "id.unique", "kind": "unique", "target": "customer_id", "policy": "fail", "status": "pass",
                 "checked": 1_000_000, "failing": 0, "detail": "all unique", "examples": []},
                {"id": "age.range", "kind": "range", "target": "age", "policy": "quarantine", "status": "warn",
                 "checked": 1_000_000, "failing": 12, "detail": "allowed [0, 120]; 12 rows outside",
                 "examples": ["customer_id=17", "customer_id=99"]}
            ]},
            "guards": {"verdict": "pass", "guards": [
                {"id": "score.finite", "status": "pass", "value": 0.0, "bound": "0", "detail": "no NaN scores"}
            ]},
            "drift": {"verdict": "warn", "reference": "profile of 2026-10 run", "columns": [
                {"name": "age", "kind": "feature", "psi": 0.003, "js": 0.01, "status": "pass",
                 "psi_warn": 0.1, "psi_fail": 0.25, "js_warn": 0.1, "js_fail": 0.2,
                 "reference_mean": 41.2, "current_mean": 41.3, "reference_null_share": 0.0,
                 "current_null_share": 0.01},
                {"name": "tenure_months", "kind": "feature", "psi": 0.14, "js": 0.05, "status": "warn",
                 "psi_warn": 0.1, "psi_fail": 0.25, "js_warn": 0.1, "js_fail": 0.2,
                 "reference_mean": 30.0, "current_mean": 26.5, "reference_null_share": 0.0,
                 "current_null_share": 0.0},
                {"name": "score", "kind": "score", "psi": null, "js": null, "status": "pass"}
            ]},
            "score_histogram": {"column": "score", "edges": [0.0, 0.25, 0.5, 0.75, 1.0],
                                "current": [0.4, 0.3, 0.2, 0.1], "reference": [0.35, 0.35, 0.2, 0.1]}
        })
    }

    #[test]
    fn hostile_text_is_escaped_everywhere() {
        let mut report = full_report();
        report["model"]["name"] = json!("<script>alert(1)</script>");
        report["run_id"] = json!("run\"'&<b>");
        report["checks"]["rules"][0]["examples"] = json!(["<img src=x onerror=alert(2)>"]);
        report["drift"]["columns"][0]["name"] = json!("</td><script>alert(3)</script>");
        let page = render(&report);
        assert!(!page.contains("<script>alert(1)</script>"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("run&quot;&#39;&amp;&lt;b&gt;"));
        assert!(!page.contains("<img"));
        assert!(!page.contains("<script>alert(3)"));
        // Only the page's own self-check script survives.
        assert_eq!(page.matches("<script").count(), 1);
    }

    #[test]
    fn empty_and_odd_reports_render_without_panicking() {
        for report in [
            json!({}),
            Value::Null,
            json!([1, 2]),
            json!({"checks": null, "drift": 3, "rows": "x"}),
        ] {
            let page = render(&report);
            assert!(page.starts_with("<!DOCTYPE html>"));
            assert!(page.contains("<meta charset=\"utf-8\">"));
            assert!(page.contains("id=\"summary\""));
            assert!(page.contains("Not run."));
            assert!(page.trim_end().ends_with("</html>"));
        }
    }

    #[test]
    fn full_report_shows_every_rule_guard_and_drift_column() {
        let page = render(&full_report());
        for needle in [
            "age.range",
            "id.unique",
            "score.finite",
            "tenure_months",
            ">age<",
            "<svg",
            "Not run",
        ] {
            assert_eq!(page.contains(needle), needle != "Not run", "{needle}");
        }
        assert!(page.contains("<title>lakescore report: churn — 20261126T093000Z-1a2b3c4d</title>"));
        assert!(page.contains("customer_id=17, customer_id=99"));
        assert!(page.contains("1,000,000"));
        assert!(page.contains("400,000 rows/s"));
        assert!(page.contains("sha256 <code>0123456789ab</code>"));
        for url in ["http://", "https://", "url(", "src=", "@import"] {
            assert!(!page.contains(url), "no external resources: found {url}");
        }
    }

    #[test]
    fn problems_sort_first_and_drift_sorts_by_psi() {
        let page = render(&full_report());
        assert!(page.find("age.range").unwrap() < page.find("id.unique").unwrap());
        let drift = &page[page.find("id=\"drift\"").unwrap()..];
        let tenure = drift.find(">tenure_months<").unwrap();
        let age = drift.find(">age<").unwrap();
        let score = drift.find(">score<").unwrap();
        assert!(tenure < age && age < score);
    }

    #[test]
    fn histogram_draws_current_and_reference_bars_with_legend() {
        let page = render(&full_report());
        assert_eq!(page.matches("class=\"bar current\"").count(), 4);
        assert_eq!(page.matches("class=\"bar reference\"").count(), 4);
        assert!(page.contains("data-bars=\"8\""));
        assert!(page.contains(">reference</text>"));
    }

    #[test]
    fn histogram_with_null_reference_draws_only_current_bars() {
        let mut report = full_report();
        report["score_histogram"]["reference"] = Value::Null;
        let page = render(&report);
        assert_eq!(page.matches("class=\"bar current\"").count(), 4);
        assert_eq!(page.matches("class=\"bar reference\"").count(), 0);
        assert!(page.contains("data-bars=\"4\""));
        assert!(!page.contains(">reference</text>"));
    }

    #[test]
    fn moved_features_and_the_score_get_their_distributions_drawn() {
        let mut report = full_report();
        let distribution = |labels: &[&str]| {
            let n = labels.len() as f64;
            json!({"labels": labels, "reference": vec![1.0 / n; labels.len()], "current": vec![1.0 / n; labels.len()]})
        };
        let columns = report["drift"]["columns"].as_array_mut().unwrap();
        columns[0]["distribution"] = distribution(&["< 30", "30–50", ">= 50", "null"]);
        columns[1]["distribution"] = distribution(&["< 12", "12–24", "24.12345678–36.12345678", ">= 36", "null"]);
        columns[2]["distribution"] = distribution(&["gold", "silver", "a very long category name", "other", "null"]);
        let page = render(&report);
        let section = &page[page.find("id=\"distributions-section\"").expect("the section is drawn")..];
        // tenure_months warns and the score is always drawn; age passes and is not.
        assert!(section.contains("<h3>tenure_months") && section.contains("<h3>score"));
        assert!(!section.contains("<h3>age"));
        assert_eq!(section.matches("data-bars=\"10\"").count(), 2);
        assert!(section.contains(">12–24<") && section.contains(">gold<"));
        assert!(
            section.contains(">24.12345678–</tspan><tspan x=\"384.0\" dy=\"12\">36.12345678<"),
            "{section}"
        );
        assert!(
            section.contains(">a very long category…<"),
            "long names are cut to fit their bin"
        );
        // Without distributions (a report of an older lakescore) there is no section.
        assert!(!render(&full_report()).contains("distributions-section"));
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(fmt_count(Some(1_234_567.0)), "1,234,567");
        assert_eq!(fmt_count(Some(999.0)), "999");
        assert_eq!(fmt_count(Some(-1000.0)), "-1,000");
        assert_eq!(fmt_count(None), MISSING);
        assert_eq!(fmt_sig(0.003), "0.003");
        assert_eq!(fmt_sig(0.123456), "0.1235");
        assert_eq!(fmt_sig(41.25), "41.25");
        assert_eq!(fmt_sig(12345.6), "12346");
        assert_eq!(fmt_sig(0.0), "0");
        assert_eq!(fmt_sig(0.00001234), "1.234e-5");
        assert_eq!(fmt_opt_sig(None), MISSING);
        assert_eq!(fmt_pct(0.01), "1%");
        assert_eq!(nice_ceiling(0.4), 0.5);
        assert_eq!(nice_ceiling(0.22), 0.25);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(y_tick_count(0.25), 5);
        assert_eq!(y_tick_count(0.2), 4);
        assert_eq!(y_tick_count(1.0), 5);
    }
}
