//! The Prometheus text format, as far as reading figures needs: sample lines
//! `name{label="value",…} value [timestamp]`; comments and blank lines skipped.

use std::collections::BTreeMap;

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (with `_sum`, `_count`, `_bucket` for histograms).
    pub name: String,
    /// The labels.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A line that is not a sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
}

/// Every sample of `text`.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(number, line)| {
            parse_line(line).map_err(|reason| ParseError {
                line: number,
                reason,
            })
        })
        .collect()
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err("not a metric name");
    }
    let (labels, rest) = if line[name_end..].starts_with('{') {
        parse_labels(&line[name_end + 1..])?
    } else {
        (BTreeMap::new(), &line[name_end..])
    };
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| "the value is not a number")?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `a="x",b="y"}` and returns the labels and what follows the `}`.
fn parse_labels(mut text: &str) -> Result<(BTreeMap<String, String>, &str), &'static str> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let (key, after) = text.split_once('=').ok_or("a label without a value")?;
        let after = after
            .trim_start()
            .strip_prefix('"')
            .ok_or("a label value without quotes")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().ok_or("an unterminated label value")? {
                (_, '\\') => match chars.next().ok_or("an unterminated label value")?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (i, '"') => break i + 1,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        text = after[end..].trim_start();
        text = match text.strip_prefix(',') {
            Some(rest) => rest,
            None if text.starts_with('}') => text,
            None => return Err("a label not followed by , or }"),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels() {
        let text = "# HELP x_total Things.\n# TYPE x_total counter\n\
            x_total{component=\"a\",kind=\"say \\\"hi\\\", then}\"} 3\n\
            up 1 1700000000000\n\n\
            h_bucket{le=\"+Inf\"} +Inf\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "x_total");
        assert_eq!(samples[0].labels["kind"], "say \"hi\", then}");
        assert_eq!(samples[0].labels["component"], "a");
        assert_eq!(samples[0].value, 3.0);
        assert_eq!((samples[1].name.as_str(), samples[1].value), ("up", 1.0));
        assert!(samples[2].value.is_infinite());
    }

    #[test]
    fn other_text_is_refused_with_its_line() {
        let error = parse("ok 1\n<html>\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert_eq!(
            parse("x{a=\"1 2").unwrap_err().reason,
            "an unterminated label value"
        );
        assert_eq!(
            parse("x{a=\"1\" 2").unwrap_err().reason,
            "a label not followed by , or }"
        );
        assert_eq!(
            parse("x one").unwrap_err().reason,
            "the value is not a number"
        );
    }
}
