//! Reports: `report.json` (a flat object of metric name to number, plus the config) for
//! programs, and `report.md` for people.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

/// Metrics by name, the config, and Markdown sections, written together.
#[derive(Debug, Default)]
pub struct Report {
    /// Metric name to value.
    pub metrics: BTreeMap<String, f64>,
    /// The run's settings.
    pub config: BTreeMap<String, Value>,
    /// The Markdown body, section by section.
    pub markdown: Vec<String>,
}

impl Report {
    /// Records a metric.
    pub fn metric(&mut self, name: impl Into<String>, value: f64) {
        self.metrics.insert(name.into(), value);
    }

    /// Records a setting.
    pub fn setting(&mut self, name: impl Into<String>, value: impl serde::Serialize) {
        self.config.insert(
            name.into(),
            serde_json::to_value(value).expect("settings serialise"),
        );
    }

    /// Appends Markdown.
    pub fn section(&mut self, text: impl Into<String>) {
        self.markdown.push(text.into());
    }

    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path, title: &str) -> anyhow::Result<()> {
        let mut json = serde_json::Map::new();
        for (k, v) in &self.metrics {
            let number = serde_json::Number::from_f64(*v)
                .map(Value::Number)
                .unwrap_or(Value::Null);
            json.insert(k.clone(), number);
        }
        json.insert("config".into(), serde_json::to_value(&self.config)?);
        let path = dir.join("report.json");
        std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(json))?)
            .with_context(|| format!("writing {}", path.display()))?;
        let mut md = format!("# {title}\n\n");
        for s in &self.markdown {
            md.push_str(s);
            md.push_str("\n\n");
        }
        let path = dir.join("report.md");
        std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// A Markdown table from a header and rows.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        header.iter().map(|_| " --- |").collect::<String>()
    );
    for r in rows {
        s.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    s
}
