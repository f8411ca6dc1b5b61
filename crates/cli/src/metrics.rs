//! `automationctl metrics`: the collector's `/metrics`, read and summed into
//! the key figures per component (the `component` label): instances up and
//! stopped, runs by result, commits, API calls, tokens, cost, events.
//! Sums run across instances and across the labels not broken down.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{Map, Value, json};

use crate::Io;
use crate::cli::{Format, Global};
use crate::error::Failure;
use crate::format::number;
use crate::prometheus::{self, Sample};
use crate::table::Table;

/// One key figure: where it comes from and how it is broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The JSON key.
    pub key: &'static str,
    /// The table's name for it.
    pub title: &'static str,
    /// The metric summed.
    pub metric: &'static str,
    /// The label it is broken down by, if any.
    pub by: Option<&'static str>,
}

const fn spec(
    key: &'static str,
    title: &'static str,
    metric: &'static str,
    by: Option<&'static str>,
) -> Spec {
    Spec {
        key,
        title,
        metric,
        by,
    }
}

/// The figures shown, in order.
pub const SPECS: &[Spec] = &[
    spec(
        "test_runs",
        "test runs",
        "test_watcher_runs_total",
        Some("result"),
    ),
    spec(
        "tests",
        "tests",
        "test_watcher_tests_run_total",
        Some("outcome"),
    ),
    spec(
        "audit_runs",
        "audit runs",
        "audit_agent_runs_total",
        Some("result"),
    ),
    spec(
        "commits_detected",
        "commits detected",
        "audit_agent_git_commits_detected_total",
        None,
    ),
    spec(
        "api_calls",
        "API calls",
        "deepseek_api_calls_total",
        Some("status"),
    ),
    spec(
        "tokens",
        "tokens",
        "deepseek_api_tokens_used_total",
        Some("type"),
    ),
    spec(
        "cost_usd",
        "cost (USD)",
        "deepseek_api_request_cost_usd_sum",
        None,
    ),
    spec(
        "events_received",
        "events received",
        "collector_events_received_total",
        Some("event"),
    ),
    spec(
        "events_rejected",
        "events rejected",
        "collector_events_rejected_total",
        Some("reason"),
    ),
];

const UP: &str = "automation_component_up";
const STOPPED: &str = "automation_component_stopped";

/// A figure summed: the total, and per value of the breakdown label.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figure {
    /// The sum of every sample.
    pub total: f64,
    /// Sums per label value (empty without a breakdown).
    pub by: BTreeMap<String, f64>,
}

/// One component's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Component {
    /// Instances the collector knows (series of `automation_component_up`).
    pub instances: u64,
    /// Of them, up.
    pub up: f64,
    /// Of them, stopped on purpose.
    pub stopped: f64,
    /// The figures present, in [`SPECS`] order.
    pub figures: Vec<(Spec, Figure)>,
}

/// Components by name.
pub type Figures = BTreeMap<String, Component>;

/// Reads `/metrics` and prints the figures.
pub async fn run(global: &Global, io: &mut Io<'_>) -> Result<u8, Failure> {
    let url = &global.collector_metrics;
    let fail = |what: String| Failure::Service {
        service: "collector /metrics".to_owned(),
        address: url.address(),
        what,
    };
    let text = crate::http::get(url, global.timeout).await.map_err(fail)?;
    let samples =
        prometheus::parse(&text).map_err(|e| fail(format!("not Prometheus text ({e})")))?;
    let figures = figures(&samples);
    match io.format {
        Format::Json => io.json(&to_json(&figures))?,
        Format::Table => write_table(&figures, io.out)?,
    }
    Ok(0)
}

/// Sums `samples` into figures per component.
pub fn figures(samples: &[Sample]) -> Figures {
    let mut components = Figures::new();
    for sample in samples {
        let component = match sample.labels.get("component") {
            Some(name) => name.clone(),
            None if sample.name.starts_with("collector_") => "collector".to_owned(),
            None => continue,
        };
        if sample.name == UP {
            let entry = components.entry(component).or_default();
            entry.instances += 1;
            entry.up += sample.value;
        } else if sample.name == STOPPED {
            components.entry(component).or_default().stopped += sample.value;
        } else if let Some(spec) = SPECS.iter().find(|s| s.metric == sample.name) {
            let entry = components.entry(component).or_default();
            let figure = match entry.figures.iter().position(|(s, _)| s == spec) {
                Some(i) => &mut entry.figures[i].1,
                None => {
                    entry.figures.push((*spec, Figure::default()));
                    &mut entry.figures.last_mut().expect("just pushed").1
                }
            };
            figure.total += sample.value;
            if let Some(label) = spec.by {
                let value = sample.labels.get(label).map_or("-", String::as_str);
                *figure.by.entry(value.to_owned()).or_default() += sample.value;
            }
        }
    }
    for component in components.values_mut() {
        component
            .figures
            .sort_by_key(|(spec, _)| SPECS.iter().position(|s| s == spec));
    }
    components
}

/// The figures as JSON: `{"components": {name: {instances, up, stopped, <key>: {total, by_<label>}}}}`.
pub fn to_json(figures: &Figures) -> Value {
    let components: Map<String, Value> = figures
        .iter()
        .map(|(name, c)| {
            let mut object = Map::new();
            object.insert("instances".into(), c.instances.into());
            object.insert("up".into(), json!(c.up));
            object.insert("stopped".into(), json!(c.stopped));
            for (spec, figure) in &c.figures {
                let mut entry = Map::new();
                entry.insert("total".into(), json!(figure.total));
                if let Some(label) = spec.by {
                    entry.insert(format!("by_{label}"), json!(figure.by));
                }
                object.insert(spec.key.into(), entry.into());
            }
            (name.clone(), object.into())
        })
        .collect();
    json!({ "components": components })
}

fn write_table(figures: &Figures, out: &mut dyn Write) -> std::io::Result<()> {
    if figures.is_empty() {
        writeln!(out, "no component has reported yet")?;
        return out.flush();
    }
    let mut table = Table::new(&["COMPONENT", "FIGURE", "TOTAL", "BREAKDOWN"]);
    for (name, c) in figures {
        if c.instances > 0 {
            let mut up = format!("{} of {}", number(c.up), c.instances);
            if c.stopped > 0.0 {
                up.push_str(&format!(" ({} stopped)", number(c.stopped)));
            }
            table.row([name.as_str(), "instances up", &up, ""]);
        }
        for (spec, figure) in &c.figures {
            let breakdown: Vec<String> = figure
                .by
                .iter()
                .filter(|(_, v)| **v != 0.0)
                .map(|(k, v)| format!("{k}={}", number(*v)))
                .collect();
            table.row([
                name.as_str(),
                spec.title,
                &number(figure.total),
                &breakdown.join(" "),
            ]);
        }
    }
    table.write(out)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE automation_component_up gauge
automation_component_up{component="api-gateway",component_instance="a"} 1
automation_component_up{component="api-gateway",component_instance="b"} 0
automation_component_stopped{component="api-gateway",component_instance="b"} 1
deepseek_api_calls_total{component="api-gateway",component_instance="a",model="deepseek-chat",status="ok"} 3
deepseek_api_calls_total{component="api-gateway",component_instance="b",model="other",status="ok"} 1
deepseek_api_calls_total{component="api-gateway",component_instance="a",model="deepseek-chat",status="rate_limited"} 2
deepseek_api_calls_total{component="api-gateway",component_instance="a",model="deepseek-chat",status="timeout"} 0
deepseek_api_request_cost_usd_sum{component="api-gateway",component_instance="a",model="deepseek-chat"} 0.0125
deepseek_api_request_cost_usd_count{component="api-gateway",component_instance="a",model="deepseek-chat"} 5
collector_events_received_total{event="heartbeat"} 7
"#;

    #[test]
    fn sums_across_instances_and_other_labels() {
        let figures = figures(&prometheus::parse(TEXT).unwrap());
        let gateway = &figures["api-gateway"];
        assert_eq!(
            (gateway.instances, gateway.up, gateway.stopped),
            (2, 1.0, 1.0)
        );
        let (spec, calls) = &gateway.figures[0];
        assert_eq!(spec.key, "api_calls");
        assert_eq!(calls.total, 6.0);
        assert_eq!(calls.by["ok"], 4.0);
        assert_eq!(gateway.figures[1].1.total, 0.0125);
        assert_eq!(figures["collector"].figures[0].1.by["heartbeat"], 7.0);
    }

    #[test]
    fn a_table_and_json_of_the_same_figures() {
        let figures = figures(&prometheus::parse(TEXT).unwrap());
        let mut out = Vec::new();
        write_table(&figures, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "COMPONENT    FIGURE           TOTAL               BREAKDOWN\n\
             api-gateway  instances up     1 of 2 (1 stopped)\n\
             api-gateway  API calls        6                   ok=4 rate_limited=2\n\
             api-gateway  cost (USD)       0.0125\n\
             collector    events received  7                   heartbeat=7\n"
        );
        let json = to_json(&figures);
        assert_eq!(
            json["components"]["api-gateway"]["api_calls"]["by_status"]["timeout"],
            0.0
        );
        assert_eq!(json["components"]["api-gateway"]["instances"], 2);
        assert_eq!(
            json["components"]["collector"]["events_received"]["total"],
            7.0
        );
    }
}
