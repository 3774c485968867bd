//! Reading a Prometheus text exposition (`/metrics`): each metric's value summed over
//! its label sets, or one metric's series by label set. Enough for the counters and gauges a run samples; histograms'
//! `_bucket`/`_sum`/`_count` series come out as their own names.

use std::collections::{BTreeMap, HashMap};

/// `name → value`, summed over label sets. A metric the server has not registered yet
/// (the exporter lists a counter only after its first increment) is simply absent.
pub fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for (name, _, value) in samples(text) {
        *out.entry(name.to_owned()).or_insert(0.0) += value;
    }
    out
}

/// The series of metric `name`, one per label set: `labels → value`, the labels as
/// written between the braces (`outcome="applied"`; `""` for a series without).
pub fn series(text: &str, name: &str) -> BTreeMap<String, f64> {
    samples(text)
        .filter(|(n, _, _)| *n == name)
        .map(|(_, labels, v)| (labels.to_owned(), v))
        .collect()
}

/// Every sample line as (name, labels, value).
fn samples(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (name, labels, rest) = match line.find(['{', ' ', '\t']) {
            Some(i) if line.as_bytes()[i] == b'{' => {
                // Label values may hold spaces and braces inside quotes: the value
                // follows the last closing brace.
                let j = line.rfind('}').filter(|&j| j > i)?;
                (&line[..i], &line[i + 1..j], &line[j + 1..])
            }
            Some(i) => (&line[..i], "", &line[i..]),
            None => return None,
        };
        let value = match rest.split_whitespace().next()? {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse::<f64>().ok()?,
        };
        Some((name, labels, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_summed_over_label_sets() {
        let text = "# HELP roster_journal_rows_written_total rows\n\
                    # TYPE roster_journal_rows_written_total counter\n\
                    roster_journal_rows_written_total 1234\n\
                    roster_journal_queue_depth 7\n\
                    roster_messages_in_total{type=\"SUB\"} 10\n\
                    roster_messages_in_total{type=\"UNSUB\"} 5 1700000000000\n\
                    odd{label=\"a } b\"} 2\n\
                    garbage line\n\
                    roster_journal_batch_seconds{quantile=\"0.5\"} NaN\n";
        let m = parse(text);
        assert_eq!(m["roster_journal_rows_written_total"], 1234.0);
        assert_eq!(m["roster_journal_queue_depth"], 7.0);
        assert_eq!(m["roster_messages_in_total"], 15.0);
        assert_eq!(m["odd"], 2.0);
        assert!(!m.contains_key("garbage"));
        assert!(m["roster_journal_batch_seconds"].is_nan());
        assert!(!m.contains_key("roster_journal_dropped_total"));
        let by_type = series(text, "roster_messages_in_total");
        assert_eq!(by_type.len(), 2);
        assert_eq!(by_type["type=\"UNSUB\""], 5.0);
        assert_eq!(
            series(text, "roster_journal_queue_depth").get(""),
            Some(&7.0)
        );
        assert!(series(text, "roster_absent").is_empty());
    }
}
