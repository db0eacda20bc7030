//! The admin `/metrics` read as Prometheus reads it: samples with their labels as a set, so a
//! test names a series without caring in which order the exposition writes its labels; and the
//! exposition checked by Prometheus's own `promtool`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses `name{a="x",b="y"}` (labels optional) into a name and a label set. Label values
/// written by the gateway never hold a quote or a comma, so no unescaping is needed.
pub fn parse_series(series: &str) -> (String, BTreeMap<String, String>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series.to_owned(), BTreeMap::new());
    };
    let labels = rest
        .trim_end_matches('}')
        .split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect();
    (name.to_owned(), labels)
}

/// Every sample of a text exposition, comments skipped.
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = parse_series(series);
            let value = value.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
            Sample {
                name,
                labels,
                value,
            }
        })
        .collect()
}

/// The value of `series` (`name` or `name{labels}`, labels in any order) among `samples`.
pub fn sample_value(samples: &[Sample], series: &str) -> Option<f64> {
    let (name, labels) = parse_series(series);
    samples
        .iter()
        .find(|s| s.name == name && s.labels == labels)
        .map(|s| s.value)
}

/// What `promtool check metrics` says of `text`: Ok with its lint findings (one
/// `metric problem` a line; none for a clean exposition), or Err when it could not parse it.
pub fn promtool_check(text: &str) -> Result<Vec<String>, String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool (Debian package `prometheus`, installed by ./dev test): {e}")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 0: clean; 3: parsed, with lint findings; anything else: not a valid exposition.
    match out.status.code() {
        Some(0 | 3) => Ok(said.lines().map(str::to_owned).collect()),
        _ => Err(said),
    }
}
