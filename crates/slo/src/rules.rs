//! The Prometheus rules an SLO file stands for, as the text of a rule file.
//! Written by hand rather than through a YAML serializer: the file is read
//! by people, reviewed in diffs and committed, so its layout and comments
//! are part of the output.

use std::fmt::Write;

use crate::spec::{Kind, Objective, Slos};

/// The rate windows of the multi-window, multi-burn-rate alerts (SRE
/// workbook, "Alerting on SLOs"), shortest first.
pub const WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

/// A burn-rate alert: both windows over the factor, in one of two pairs.
struct BurnAlert {
    suffix: &'static str,
    severity: &'static str,
    slo_alert: &'static str,
    /// (long window, short window, burn-rate factor)
    pairs: [(&'static str, &'static str, f64); 2],
    runbook: &'static str,
    what: &'static str,
}

const ALERTS: [BurnAlert; 2] = [
    BurnAlert {
        suffix: "FastBurn",
        severity: "critical",
        slo_alert: "page",
        pairs: [("1h", "5m", crate::FAST_BURN), ("6h", "30m", 6.0)],
        runbook: "docs/runbook.md#slo-fast-burn",
        what: "at this rate the whole error budget is gone in days",
    },
    BurnAlert {
        suffix: "SlowBurn",
        severity: "warning",
        slo_alert: "ticket",
        pairs: [("1d", "2h", 3.0), ("3d", "6h", 1.0)],
        runbook: "docs/runbook.md#slo-slow-burn",
        what: "at this rate the error budget runs out before the end of the period",
    },
];

/// A number as PromQL and YAML both read it, without float noise.
fn number(value: f64) -> String {
    let text = format!("{value:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_owned()
}

/// The label matcher of the bucket bound `seconds`: `le="0.25"`, and for a
/// whole number of seconds `le=~"1(\\.0)?"`, since exporters write `1` or
/// `1.0` and Prometheus 3 normalises one way, Prometheus 2 keeps both.
pub fn le_matcher(seconds: f64) -> String {
    let text = number(seconds);
    if text.contains('.') {
        format!("le=\"{text}\"")
    } else {
        format!("le=~\"{text}(\\\\.0)?\"")
    }
}

/// The SLI error ratio of `objective` over `window`, `by (color)` or overall.
fn sli_error(slos: &Slos, objective: &Objective, window: &str, by_color: bool) -> String {
    let sum = if by_color { "sum by (color)" } else { "sum" };
    let selector = slos.selector.trim();
    match objective.kind {
        // Written (errors or requests * 0) / (requests > 0): 0, not "no
        // data", while no request failed (a 5xx series exists only after a
        // 5xx); and no sample at all, rather than NaN, without requests (a
        // NaN would make the period's average NaN for the whole period).
        Kind::Availability => format!(
            "(\n  {sum} (rate(http_requests_total{{{selector}, status=~\"5..\"}}[{window}]))\n  or\n  \
             {sum} (rate(http_requests_total{{{selector}}}[{window}])) * 0\n)\n/\n\
             ({sum} (rate(http_requests_total{{{selector}}}[{window}])) > 0)"
        ),
        // All requests from the +Inf bucket rather than `_count`: the
        // OpenTelemetry convention's count becomes http_requests_total at
        // scrape time (stack/prometheus/prometheus.yml).
        Kind::Latency => {
            let le = le_matcher(objective.threshold.map_or(0.0, |t| t.as_secs_f64()));
            format!(
                "1 - (\n  {sum} (rate(http_request_duration_seconds_bucket{{{selector}, {le}}}[{window}]))\n  /\n  \
                 ({sum} (rate(http_request_duration_seconds_bucket{{{selector}, le=\"+Inf\"}}[{window}])) > 0)\n)"
            )
        }
    }
}

/// The per-second rates of bad and of all requests over 5m, `by (color)`
/// or overall: summed over the period, they weigh each window by its
/// traffic (an idle or nearly idle window barely counts).
fn sli_rates(slos: &Slos, objective: &Objective, by_color: bool) -> [String; 2] {
    let sum = if by_color { "sum by (color)" } else { "sum" };
    let selector = slos.selector.trim();
    match objective.kind {
        Kind::Availability => [
            format!(
                "{sum} (rate(http_requests_total{{{selector}, status=~\"5..\"}}[5m]))\nor\n\
                 {sum} (rate(http_requests_total{{{selector}}}[5m])) * 0"
            ),
            format!("{sum} (rate(http_requests_total{{{selector}}}[5m]))"),
        ],
        Kind::Latency => {
            let le = le_matcher(objective.threshold.map_or(0.0, |t| t.as_secs_f64()));
            let all = format!("{sum} (rate(http_request_duration_seconds_bucket{{{selector}, le=\"+Inf\"}}[5m]))");
            [
                format!("{all}\n-\n{sum} (rate(http_request_duration_seconds_bucket{{{selector}, {le}}}[5m]))"),
                all,
            ]
        }
    }
}

/// Appends `text` indented by `spaces` under a `|` block.
fn block(out: &mut String, spaces: usize, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{}{line}", " ".repeat(spaces));
    }
}

/// The rule file for `slos`, with `source` (the SLO file's path) named in its header.
pub fn render(slos: &Slos, source: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "# GENERATED by `vigie slo` from {source}: do not edit; change {source} and run\n\
         #   vigie slo {source} --output stack/prometheus/rules/slo.yml\n\
         # (a test fails while this file is stale). What the series and alerts\n\
         # mean: docs/concepts.md, \"Service level objectives\".\n\
         #\n\
         # Per objective (label slo) and color (label color; color=\"all\" is the\n\
         # service as a whole):\n\
         #   slo:sli_error:ratio_rate<W>   share of bad requests over W\n\
         #   slo:burn_rate:ratio_rate<W>   that share / the error budget\n\
         #   slo:sli_bad:rate5m, slo:sli_total:rate5m   bad and all requests per second\n\
         #   slo:sli_error:ratio_rate{days}d   share of bad requests over the period\n\
         #   slo:period_burn_rate:ratio, slo:period_error_budget_remaining:ratio\n\
         # and per objective slo:objective:ratio, slo:error_budget:ratio,\n\
         # slo:time_period:days.\n\n\
         groups:\n",
        days = slos.period_days()
    );
    for objective in &slos.objectives {
        render_objective(&mut out, slos, objective);
    }
    out
}

fn render_objective(out: &mut String, slos: &Slos, objective: &Objective) {
    let name = &objective.name;
    let service = &slos.service;
    let budget = number(objective.budget());
    let days = slos.period_days();
    let labels = format!("service: {service}\n          slo: {name}");
    // One group per objective: a group's rules run in order at each
    // evaluation, so burn rates and alerts read the ratios of the same
    // evaluation, never one interval late (groups run independently).
    let _ = writeln!(out, "  - name: slo.{name}");
    let _ = writeln!(out, "    rules:");
    let _ = writeln!(
        out,
        "      # {} objective: {}% over {days}d.",
        match objective.kind {
            Kind::Availability => "Availability (requests not answered 5xx)".to_owned(),
            Kind::Latency => format!(
                "Latency (requests answered within {}ms)",
                objective.threshold.map_or(0, |t| t.as_millis())
            ),
        },
        number(objective.objective_percent)
    );
    for window in WINDOWS {
        for by_color in [true, false] {
            let _ = writeln!(out, "      - record: slo:sli_error:ratio_rate{window}");
            let _ = writeln!(out, "        expr: |");
            block(out, 10, &sli_error(slos, objective, window, by_color));
            let _ = writeln!(out, "        labels:");
            let _ = writeln!(out, "          {labels}");
            if !by_color {
                let _ = writeln!(out, "          color: all");
            }
        }
    }
    for by_color in [true, false] {
        let [bad, all] = sli_rates(slos, objective, by_color);
        for (record, expr) in [("slo:sli_bad:rate5m", bad), ("slo:sli_total:rate5m", all)] {
            let _ = writeln!(out, "      - record: {record}");
            let _ = writeln!(out, "        expr: |");
            block(out, 10, &expr);
            let _ = writeln!(out, "        labels:");
            let _ = writeln!(out, "          {labels}");
            if !by_color {
                let _ = writeln!(out, "          color: all");
            }
        }
    }

    for (record, value) in [
        ("slo:objective:ratio", number(objective.ratio())),
        ("slo:error_budget:ratio", budget.clone()),
        ("slo:time_period:days", days.to_string()),
    ] {
        let _ = writeln!(out, "      - record: {record}");
        let _ = writeln!(out, "        expr: vector({value})");
        let _ = writeln!(out, "        labels:");
        let _ = writeln!(out, "          {labels}");
    }
    let only = format!("{{slo=\"{name}\"}}");
    // The rule labels repeat what the series carry: each rule is told
    // apart from the other objectives' rules of the same name.
    let record = |out: &mut String, name: &str, expr: &str| {
        let _ = writeln!(out, "      - record: {name}");
        let _ = writeln!(out, "        expr: {expr}");
        let _ = writeln!(out, "        labels:");
        let _ = writeln!(out, "          {labels}");
    };
    for window in WINDOWS {
        record(
            out,
            &format!("slo:burn_rate:ratio_rate{window}"),
            &format!("slo:sli_error:ratio_rate{window}{only} / {budget}"),
        );
    }
    let _ = writeln!(
        out,
        "      # The period's share: bad over all requests of the period, from the\n      \
         # 5m rates (each window weighs as much as its traffic; not the average\n      \
         # of the 5m shares, where one bad window of a nearly idle color would\n      \
         # outweigh weeks of busy ones)."
    );
    record(
        out,
        &format!("slo:sli_error:ratio_rate{days}d"),
        &format!(
            "sum_over_time(slo:sli_bad:rate5m{only}[{days}d]) / (sum_over_time(slo:sli_total:rate5m{only}[{days}d]) > 0)"
        ),
    );
    record(
        out,
        "slo:period_burn_rate:ratio",
        &format!("slo:sli_error:ratio_rate{days}d{only} / {budget}"),
    );
    record(
        out,
        "slo:period_error_budget_remaining:ratio",
        &format!("1 - slo:period_burn_rate:ratio{only}"),
    );

    let title = objective.title();
    let per_color = format!("{{slo=\"{name}\", color!=\"all\"}}");
    for alert in &ALERTS {
        let [(long_a, short_a, factor_a), (long_b, short_b, factor_b)] = alert.pairs;
        let _ = writeln!(
            out,
            "      # {}: burn rate over {}x in {long_a} and {short_a}, or over {}x in {long_b} and {short_b}.",
            alert.slo_alert,
            number(factor_a),
            number(factor_b)
        );
        let _ = writeln!(out, "      - alert: VigieSLO{title}{}", alert.suffix);
        let _ = writeln!(out, "        expr: |");
        let expr = format!(
            "(\n  slo:burn_rate:ratio_rate{long_a}{per_color} > {fa}\n  and\n  slo:burn_rate:ratio_rate{short_a}{per_color} > {fa}\n)\nor\n(\n  \
             slo:burn_rate:ratio_rate{long_b}{per_color} > {fb}\n  and\n  slo:burn_rate:ratio_rate{short_b}{per_color} > {fb}\n)",
            fa = number(factor_a),
            fb = number(factor_b)
        );
        block(out, 10, &expr);
        let _ = writeln!(out, "        labels:");
        let _ = writeln!(out, "          severity: {}", alert.severity);
        let _ = writeln!(out, "          slo_alert: {}", alert.slo_alert);
        let _ = writeln!(out, "        annotations:");
        let _ = writeln!(
            out,
            "          summary: \"{service} {name} SLO: {{{{ $labels.color }}}} burns its error budget {{{{ $value | printf \\\"%.1f\\\" }}}}x too fast\""
        );
        let _ = writeln!(
            out,
            "          description: \"The {name} objective is {}% over {days}d (error budget {budget}). {{{{ $labels.color }}}} spends it {{{{ $value | printf \\\"%.1f\\\" }}}} times faster than the period allows: {}.\"",
            number(objective.objective_percent),
            alert.what
        );
        let _ = writeln!(out, "          runbook_url: \"{}\"", alert.runbook);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_second_bounds_match_both_spellings() {
        assert_eq!(le_matcher(0.25), r#"le="0.25""#);
        assert_eq!(le_matcher(1.0), r#"le=~"1(\\.0)?""#);
    }

    #[test]
    fn numbers_are_written_without_float_noise() {
        assert_eq!(number(1.0 - 0.999), "0.001");
        assert_eq!(number(14.4), "14.4");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(99.0), "99");
    }

    #[test]
    fn the_latency_sli_counts_requests_above_the_bucket_bound() {
        let slos = crate::Slos::parse(
            "service: s\nperiod: 7d\nselector: 'job=\"b\"'\nobjectives:\n  - {name: fast, kind: latency, objective_percent: 99, threshold: 500ms}\n",
            "f",
        )
        .expect("valid");
        let expr = sli_error(&slos, &slos.objectives[0], "1h", true);
        assert!(
            expr.contains(r#"http_request_duration_seconds_bucket{job="b", le="0.5"}[1h]"#),
            "{expr}"
        );
        assert!(expr.starts_with("1 - ("), "{expr}");
        let text = render(&slos, "f");
        assert!(text.contains("slo:sli_error:ratio_rate7d"), "{text}");
        assert!(text.contains("alert: VigieSLOFastFastBurn"), "{text}");
    }
}
