//! OpenTelemetry names as Prometheus names, the way the OpenTelemetry →
//! Prometheus compatibility specification writes them: invalid characters
//! become `_` (runs of them one `_`), the unit becomes a suffix in words
//! (`s` → `_seconds`, `By` → `_bytes`, `1` on a gauge → `_ratio`, `x/s` →
//! `_x_per_second`, `{annotations}` dropped), and monotonic sums end in
//! `_total`.

/// What kind of Prometheus series a metric becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A monotonic sum.
    Counter,
    /// A gauge, or a sum that may go down.
    Gauge,
    /// An explicit-bucket histogram.
    Histogram,
}

/// The Prometheus metric name of an OpenTelemetry metric.
pub fn metric_name(name: &str, unit: &str, shape: Shape) -> String {
    let mut out = sanitize(name, true);
    let suffix = match (unit_words(unit), shape) {
        (None, Shape::Gauge) if unit.trim() == "1" => Some("ratio".to_owned()),
        (words, _) => words,
    };
    if let Some(words) = suffix
        && !out.split('_').any(|part| part == words)
        && !out.ends_with(&format!("_{words}"))
    {
        out = format!("{out}_{words}");
    }
    if shape == Shape::Counter && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}

/// A Prometheus label name for an attribute key.
pub fn label_name(key: &str) -> String {
    let name = sanitize(key, false);
    // Names Prometheus reserves, and the labels this collector sets itself.
    if name.starts_with("__")
        || matches!(
            name.as_str(),
            "component" | "component_instance" | "le" | "quantile"
        )
    {
        format!("exported_{}", name.trim_start_matches('_'))
    } else {
        name
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` for metric names (`[a-zA-Z_][a-zA-Z0-9_]*`
/// for labels), each run of other characters one `_`, a leading digit
/// behind `_` (`key_` for labels, as the specification asks).
fn sanitize(text: &str, metric: bool) -> String {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':');
    let mut out = String::with_capacity(text.len() + 4);
    let mut underscore = false;
    for c in text.chars() {
        if valid(c) {
            out.push(c);
            underscore = c == '_';
        } else if !underscore {
            out.push('_');
            underscore = true;
        }
    }
    if out.is_empty() {
        return "_".to_owned();
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, if metric { "_" } else { "key_" });
    }
    out
}

/// A unit in words: `ms` → `milliseconds`, `By/s` → `bytes_per_second`;
/// `None` for no unit, `1` and pure annotations.
fn unit_words(unit: &str) -> Option<String> {
    // Annotations in braces say what is counted, not a unit.
    let mut plain = String::new();
    let mut depth = 0usize;
    for c in unit.trim().chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let (main, per) = match plain.split_once('/') {
        Some((main, per)) => (main.trim(), Some(per.trim())),
        None => (plain.trim(), None),
    };
    let main = match main {
        "" | "1" => None,
        unit => Some(word(unit, false)),
    };
    let per = per.filter(|p| !p.is_empty()).map(|p| word(p, true));
    let text = match (main, per) {
        (None, None) => return None,
        (Some(main), None) => main,
        (None, Some(per)) => format!("per_{per}"),
        (Some(main), Some(per)) => format!("{main}_per_{per}"),
    };
    let text = sanitize(&text, false);
    Some(text.trim_matches('_').to_owned()).filter(|t| !t.is_empty())
}

/// One unit in words, singular after "per".
fn word(unit: &str, singular: bool) -> String {
    let (plural, one) = match unit {
        "d" => ("days", "day"),
        "h" => ("hours", "hour"),
        "min" => ("minutes", "minute"),
        "s" => ("seconds", "second"),
        "ms" => ("milliseconds", "millisecond"),
        "us" => ("microseconds", "microsecond"),
        "ns" => ("nanoseconds", "nanosecond"),
        "By" => ("bytes", "byte"),
        "KiBy" => ("kibibytes", "kibibyte"),
        "MiBy" => ("mebibytes", "mebibyte"),
        "GiBy" => ("gibibytes", "gibibyte"),
        "TiBy" => ("tebibytes", "tebibyte"),
        "KBy" => ("kilobytes", "kilobyte"),
        "MBy" => ("megabytes", "megabyte"),
        "GBy" => ("gigabytes", "gigabyte"),
        "TBy" => ("terabytes", "terabyte"),
        "m" => ("meters", "meter"),
        "V" => ("volts", "volt"),
        "A" => ("amperes", "ampere"),
        "J" => ("joules", "joule"),
        "W" => ("watts", "watt"),
        "g" => ("grams", "gram"),
        "Cel" => ("celsius", "celsius"),
        "Hz" => ("hertz", "hertz"),
        "%" => ("percent", "percent"),
        "$" => ("dollars", "dollar"),
        other => return other.to_owned(),
    };
    (if singular { one } else { plural }).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_specification() {
        use Shape::*;
        assert_eq!(
            metric_name("http.server.duration", "s", Histogram),
            "http_server_duration_seconds"
        );
        assert_eq!(metric_name("orders", "{order}", Counter), "orders_total");
        assert_eq!(metric_name("orders.total", "", Counter), "orders_total");
        assert_eq!(metric_name("queue.size", "By", Gauge), "queue_size_bytes");
        assert_eq!(
            metric_name("cpu.utilization", "1", Gauge),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            metric_name("cpu.utilization", "1", Counter),
            "cpu_utilization_total"
        );
        assert_eq!(
            metric_name("net.io", "By/s", Gauge),
            "net_io_bytes_per_second"
        );
        assert_eq!(
            metric_name("latency_seconds", "s", Histogram),
            "latency_seconds"
        );
        assert_eq!(
            metric_name("2xx..responses", "", Counter),
            "_2xx_responses_total"
        );
        assert_eq!(
            metric_name("requests", "{req}/min", Gauge),
            "requests_per_minute"
        );
        assert_eq!(metric_name("weird", "m³", Gauge), "weird_m");
    }

    #[test]
    fn labels_are_sanitised_and_ours_are_kept_apart() {
        assert_eq!(label_name("http.method"), "http_method");
        assert_eq!(label_name("1st"), "key_1st");
        assert_eq!(label_name("component"), "exported_component");
        assert_eq!(
            label_name("component.instance"),
            "exported_component_instance"
        );
        assert_eq!(label_name("__name__"), "exported_name__");
        assert_eq!(label_name("le"), "exported_le");
        assert_eq!(label_name(""), "_");
    }
}
