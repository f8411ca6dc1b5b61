//! `/metrics`: every instance renders its own recorder, and the texts are
//! merged so each metric family appears once, with one HELP and TYPE line.
//! Rendering is CPU work: callers run it off the async workers.

use std::collections::BTreeMap;

use crate::state::State;

#[derive(Default)]
struct Family<'a> {
    help: Option<&'a str>,
    kind: Option<&'a str>,
    samples: Vec<&'a str>,
}

/// The Prometheus text exposition of every instance's series. Instances
/// render in parallel, one share per core, since each has its own recorder.
pub fn render(state: &State) -> String {
    state.count_render();
    let instances = state.instances();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(instances.len().div_ceil(16))
        .max(1);
    let share = instances.len().div_ceil(threads);
    let texts: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = instances
            .chunks(share.max(1))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|inst| inst.render())
                        .collect::<Vec<String>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("rendering does not panic"))
            .collect()
    });
    merge(&texts)
}

/// A label value escaped for the text format (for the series written here,
/// not by the exporter).
pub fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `component="…",component_instance="…"`, escaped.
pub fn instance_labels(component: &str, instance: &str) -> String {
    format!(
        "component=\"{}\",component_instance=\"{}\"",
        label_value(component),
        label_value(instance)
    )
}

/// Merges exposition texts whose families may repeat across texts.
pub fn merge(texts: &[String]) -> String {
    let mut families: BTreeMap<&str, Family<'_>> = BTreeMap::new();
    let mut size = 0;
    for text in texts {
        size += text.len();
        let mut current: Option<&str> = None;
        // Samples of one family are contiguous within a text: keep each run
        // as one slice instead of line by line.
        let mut run: Option<(usize, usize)> = None;
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let start = offset;
            offset += line.len();
            if let Some(rest) = line.strip_prefix("# ") {
                flush(&mut families, current, text, &mut run);
                let mut parts = rest.splitn(3, ' ');
                let (Some(tag), Some(name)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let family = families.entry(name.trim_end()).or_default();
                match tag {
                    "HELP" => {
                        family.help.get_or_insert(line);
                    }
                    "TYPE" => {
                        family.kind.get_or_insert(line);
                    }
                    _ => {}
                }
                current = Some(name.trim_end());
            } else if line.trim().is_empty() {
                flush(&mut families, current, text, &mut run);
            } else {
                run = Some(match run {
                    Some((s, _)) => (s, offset),
                    None => (start, offset),
                });
            }
        }
        flush(&mut families, current, text, &mut run);
    }
    let mut out = String::with_capacity(size);
    for family in families.values() {
        if family.samples.is_empty() {
            continue;
        }
        out.extend(family.help);
        out.extend(family.kind);
        for chunk in &family.samples {
            out.push_str(chunk);
        }
    }
    out
}

fn flush<'a>(
    families: &mut BTreeMap<&'a str, Family<'a>>,
    current: Option<&'a str>,
    text: &'a str,
    run: &mut Option<(usize, usize)>,
) {
    if let (Some(name), Some((start, end))) = (current, run.take()) {
        families
            .entry(name)
            .or_default()
            .samples
            .push(&text[start..end]);
    }
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn families_from_several_texts_appear_once() {
        let a = "# HELP x_total X.\n# TYPE x_total counter\nx_total{i=\"a\"} 1\n\n# TYPE g gauge\ng{i=\"a\"} 2\n\n".to_owned();
        let b =
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{i=\"b\"} 3\nx_total{i=\"c\"} 4\n\n"
                .to_owned();
        let merged = merge(&[a, b]);
        assert_eq!(
            merged,
            "# TYPE g gauge\ng{i=\"a\"} 2\n# HELP x_total X.\n# TYPE x_total counter\nx_total{i=\"a\"} 1\nx_total{i=\"b\"} 3\nx_total{i=\"c\"} 4\n"
        );
    }
}
