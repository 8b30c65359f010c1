//! The Grafana dashboard in `deploy/grafana/wsline.json` queries only
//! metrics the hub serves: every `wsline_*` name in a panel's query has a
//! sample on `/metrics` once the hub has seen some traffic.

mod common;

use std::collections::BTreeSet;

use common::{config, start};
use serde_json::{json, Value};
use wsline::CloseCode;

const DASHBOARD: &str = include_str!("../../../deploy/grafana/wsline.json");

/// Every PromQL query of the dashboard (panels' targets and variables).
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(q)) => out.push(q.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The `wsline_*` metric names in a query.
fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("wsline_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_served() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut qs = Vec::new();
    queries(&dashboard, &mut qs);
    let wanted: BTreeSet<String> = qs.iter().flat_map(|q| metric_names(q)).collect();
    assert!(wanted.len() >= 10, "the dashboard queries {wanted:?}");

    // Some traffic, so that labelled and histogram series exist: a
    // subscriber gets a publication, then one client closes.
    let hub = start(config()).await;
    let mut sub = hub.client().await;
    sub.subscribe("dash").await;
    hub.api_publish("dash", json!(1)).await;
    assert_eq!(sub.recv().await["offset"], 1);
    let mut leaving = hub.client().await;
    leaving
        .ws
        .close(CloseCode::NORMAL, "bye")
        .await
        .expect("close");
    let metrics = hub
        .metrics_until(|m| m.0.contains("wsline_closes_total{"))
        .await;

    let served: BTreeSet<String> = metrics
        .0
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<&String> = wanted.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which /metrics does not serve:\n{}",
        metrics.0
    );
}
