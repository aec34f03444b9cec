//! The `evaluate --html` page: one static page (inline CSS and SVG, nothing
//! fetched) with the metrics table, the ROC curves, the calibration plot and
//! lift and gain by decile, for every model evaluated.

use std::fmt::Write as _;

use super::EvaluationReport;
use crate::html::{esc, page_head};

/// Line colours, one per model (champion first).
const COLOURS: [&str; 6] = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

const SIZE: f64 = 320.0;
const MARGIN: f64 = 44.0;

/// The page for a report.
pub fn render(report: &EvaluationReport) -> String {
    let mut page = String::with_capacity(16 * 1024);
    let names: Vec<String> = report.models.iter().map(|m| esc(&m.model.name)).collect();
    let title: Vec<&str> = report.models.iter().map(|m| m.model.name.as_str()).collect();
    page.push_str(&page_head(&format!("lakescore evaluation: {}", title.join(", ")), ""));
    page.push_str("<body>\n<main>\n");
    let _ = writeln!(
        page,
        "<header><h1>Evaluation of {}</h1><p class=\"sub\">{} labelled rows of <code>{}</code>, label \
         <code>{}</code>; {} rows without a label left out. lakescore {}.</p></header>",
        names.join(" vs "),
        report.models.first().map_or(0, |m| m.metrics.rows),
        esc(&report.input.display().to_string()),
        esc(&report.label),
        report.rows_unlabeled,
        report.lakescore_version
    );
    page.push_str(&summary(report));
    page.push_str("<h2 id=\"plots\">ROC and calibration</h2>\n<p>");
    page.push_str(&roc_svg(report));
    page.push(' ');
    page.push_str(&calibration_svg(report));
    page.push_str("</p>\n");
    page.push_str(&legend(report));
    for (k, evaluation) in report.models.iter().enumerate() {
        page.push_str(&deciles_table(&names[k], &evaluation.metrics.deciles));
    }
    if let Some(comparison) = &report.comparison {
        let _ = write!(
            page,
            "<h2 id=\"comparison\">Champion and challengers</h2>\n<p class=\"muted\">On {} of {} rows{}.</p>\n\
             <table><tr><th>challenger</th><th>champion</th><th class=\"num\">rank correlation</th>\
             <th class=\"num\">top-decile agreement</th><th class=\"num\">mean difference</th></tr>\n",
            comparison.sample_rows,
            comparison.rows,
            if comparison.exact {
                ""
            } else {
                " (a hash-chosen sample)"
            }
        );
        for a in &comparison.agreements {
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:+.6}</td></tr>",
                esc(&a.challenger),
                esc(&a.champion),
                number(a.rank_correlation),
                number(a.top_decile_agreement),
                a.mean_difference
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str(
        "<footer>This page contains aggregates only: metrics, curves and counts. It loads nothing from the \
         network.</footer>\n</main>\n",
    );
    page.push_str(SELF_CHECK);
    page.push_str("</body>\n</html>\n");
    page
}

fn number(value: Option<f64>) -> String {
    value.map_or("—".to_string(), |v| format!("{v:.6}"))
}

fn summary(report: &EvaluationReport) -> String {
    let mut out = String::from(
        "<h2>Metrics</h2>\n<table id=\"summary\"><tr><th>model</th><th class=\"num\">rows</th>\
         <th class=\"num\">positives</th><th class=\"num\">AUC</th><th class=\"num\">log loss</th>\
         <th class=\"num\">Brier</th><th class=\"num\">accuracy</th><th class=\"num\">top-decile lift</th></tr>\n",
    );
    for evaluation in &report.models {
        let m = &evaluation.metrics;
        let accuracy = m
            .confusion
            .iter()
            .map(|c| format!("{} at {}", number(c.accuracy), c.threshold))
            .collect::<Vec<_>>()
            .join("<br>");
        let auc = match m.auc_method {
            "exact" => number(m.auc),
            _ => format!("{} (±{:.1e})", number(m.auc), m.auc_error_bound),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{auc}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{accuracy}</td><td class=\"num\">{}</td></tr>",
            esc(&evaluation.model.name),
            m.rows,
            m.positives,
            number(m.log_loss),
            number(m.brier),
            m.deciles.first().map_or("—".into(), |d| format!("{:.3}", d.lift)),
        );
    }
    out.push_str("</table>\n");
    out
}

/// Plot coordinates of a point of the unit square.
fn at(x: f64, y: f64) -> (f64, f64) {
    (MARGIN + x * SIZE, MARGIN / 2.0 + (1.0 - y) * SIZE)
}

/// An empty unit-square plot with its axes, diagonal and title.
fn frame(title: &str, x_label: &str, y_label: &str, lines: usize) -> String {
    let (w, h) = (SIZE + MARGIN * 1.5, SIZE + MARGIN * 1.6);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         data-lines=\"{lines}\" role=\"img\" aria-label=\"{title}\">"
    );
    for tick in 0..=4 {
        let v = tick as f64 / 4.0;
        let (x, y0) = at(v, 0.0);
        let (_, y1) = at(v, 1.0);
        let (x0, y) = at(0.0, v);
        let (x1, _) = at(1.0, v);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{y1:.1}\"/>\
             <line class=\"grid\" x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{x1:.1}\" y2=\"{y:.1}\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{v}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v}</text>",
            y0 + 14.0,
            x0 - 4.0,
            y + 4.0
        );
    }
    let ((x0, y0), (x1, y1)) = (at(0.0, 0.0), at(1.0, 1.0));
    let _ = write!(
        out,
        "<line class=\"axis\" stroke-dasharray=\"4 4\" x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x1:.1}\" y2=\"{y1:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x_label}</text>\
         <text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{y_label}</text>\
         <text x=\"{:.1}\" y=\"14\" text-anchor=\"middle\" font-weight=\"600\">{title}</text>",
        (x0 + x1) / 2.0,
        y0 + 32.0,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
        (x0 + x1) / 2.0,
    );
    out
}

fn roc_svg(report: &EvaluationReport) -> String {
    let mut out = frame("ROC", "false positive rate", "true positive rate", report.models.len());
    for (k, evaluation) in report.models.iter().enumerate() {
        let points: Vec<String> = evaluation
            .metrics
            .roc
            .iter()
            .map(|&(fpr, tpr)| {
                let (x, y) = at(fpr, tpr);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            out,
            "<polyline class=\"curve\" fill=\"none\" stroke-width=\"2\" stroke=\"{}\" points=\"{}\"/>",
            COLOURS[k % COLOURS.len()],
            points.join(" ")
        );
    }
    out.push_str("</svg>");
    out
}

fn calibration_svg(report: &EvaluationReport) -> String {
    // Models without probabilities (margins) have no calibration to draw.
    let lines: Vec<(usize, Vec<String>)> = report
        .models
        .iter()
        .enumerate()
        .map(|(k, evaluation)| {
            let points = evaluation
                .metrics
                .calibration
                .iter()
                .filter_map(|bin| {
                    let (x, y) = at(bin.mean_score?, bin.positive_rate?);
                    Some(format!("{x:.1},{y:.1}"))
                })
                .collect();
            (k, points)
        })
        .filter(|(_, points): &(usize, Vec<String>)| !points.is_empty())
        .collect();
    let mut out = frame("Calibration", "mean score", "positive rate", lines.len());
    for (k, points) in &lines {
        let colour = COLOURS[k % COLOURS.len()];
        let _ = write!(
            out,
            "<polyline class=\"curve\" fill=\"none\" stroke-width=\"2\" stroke=\"{colour}\" points=\"{}\"/>",
            points.join(" ")
        );
        for point in points {
            let (x, y) = point.split_once(',').expect("x,y");
            let _ = write!(out, "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{colour}\"/>");
        }
    }
    out.push_str("</svg>");
    out
}

fn legend(report: &EvaluationReport) -> String {
    let items: Vec<String> = report
        .models
        .iter()
        .enumerate()
        .map(|(k, m)| {
            format!(
                "<span style=\"color:{}\">━</span> {}",
                COLOURS[k % COLOURS.len()],
                esc(&m.model.name)
            )
        })
        .collect();
    format!(
        "<p class=\"muted\">{}; dashed: chance (ROC), perfect calibration.</p>\n",
        items.join(" &nbsp; ")
    )
}

fn deciles_table(name: &str, deciles: &[super::metrics::Decile]) -> String {
    let mut out = format!(
        "<h2>Lift and gain by decile: {name}</h2>\n<table><tr><th>decile</th><th class=\"num\">rows</th>\
         <th class=\"num\">positives</th><th class=\"num\">response rate</th><th class=\"num\">lift</th>\
         <th class=\"num\">cumulative gain</th><th class=\"num\">cumulative lift</th>\
         <th class=\"num\">scores</th></tr>\n"
    );
    for d in deciles {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}</td><td class=\"num\">{:.4}</td>\
             <td class=\"num\">{:.3}</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.3}</td>\
             <td class=\"num\">{}</td></tr>",
            d.decile,
            d.rows,
            d.positives,
            d.response_rate,
            d.lift,
            d.cumulative_gain,
            d.cumulative_lift,
            match (d.score_max, d.score_min) {
                (Some(hi), Some(lo)) => format!("{hi:.4} … {lo:.4}"),
                _ => "—".to_string(),
            }
        );
    }
    out.push_str("</table>\n");
    out
}

/// Leaves the page's verdict in `data-rendered` for the browser test: the
/// summary is there, and every plot has a box and draws its lines.
const SELF_CHECK: &str = r#"<script>
(function () {
  var root = document.documentElement;
  function verdict() {
    if (!document.getElementById("summary")) return "broken:summary table missing";
    var svgs = document.querySelectorAll("svg");
    if (svgs.length !== 2) return "broken:expected 2 plots, found " + svgs.length;
    for (var i = 0; i < svgs.length; i++) {
      if (!(svgs[i].clientWidth > 0 && svgs[i].clientHeight > 0)) return "broken:svg " + i + " has an empty box";
      var want = Number(svgs[i].getAttribute("data-lines"));
      var lines = svgs[i].querySelectorAll("polyline.curve");
      if (lines.length !== want) return "broken:svg " + i + " drew " + lines.length + " lines, expected " + want;
      for (var j = 0; j < lines.length; j++) {
        var box = lines[j].getBBox();
        var points = lines[j].getAttribute("points").trim().split(" ").length;
        if (points > 1 && !(box.width > 0 || box.height > 0)) return "broken:svg " + i + " line " + j + " draws nothing";
      }
    }
    return "ok";
  }
  try { root.dataset.rendered = verdict(); } catch (e) { root.dataset.rendered = "broken:" + e; }
})();
</script>
"#;
