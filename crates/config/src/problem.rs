//! Problems found in the operator's files, each with its file, line and what to do.
//!
//! Validation never stops at the first problem: it collects them all, then [`Report`] prints
//! them as `file:line: path: message`. Lines come from the key paths, looked up in a
//! span-keeping parse of the same text, so validation code works on plain values and names a
//! path, never an offset.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The gateway will not run with this; `tollgate check` exits non-zero.
    Error,
    /// The gateway runs, but something will not work as the operator probably expects.
    Warning,
}

/// One problem in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: Option<usize>,
    /// The dotted key path (`plans.pro.providers.openia`), empty for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {level}: ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found while loading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    pub(crate) fn extend(&mut self, other: Report) {
        self.problems.extend(other.problems);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.problems {
            writeln!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Collects problems for one file, resolving key paths to lines.
pub(crate) struct FileProblems {
    file: PathBuf,
    text: String,
    doc: Option<toml_edit::Document<String>>,
    pub(crate) report: Report,
}

impl FileProblems {
    pub(crate) fn new(file: &Path, text: String) -> FileProblems {
        let doc = toml_edit::Document::parse(text.clone()).ok();
        FileProblems {
            file: file.to_path_buf(),
            text,
            doc,
            report: Report::default(),
        }
    }

    pub(crate) fn error(&mut self, path: &[&str], message: impl Into<String>) {
        self.push(Severity::Error, path, message.into());
    }

    pub(crate) fn warning(&mut self, path: &[&str], message: impl Into<String>) {
        self.push(Severity::Warning, path, message.into());
    }

    fn push(&mut self, severity: Severity, path: &[&str], message: String) {
        let line = self.line_of(path);
        self.report.problems.push(Problem {
            severity,
            file: self.file.clone(),
            line,
            path: path.join("."),
            message,
        });
    }

    /// Deserializes the file, reporting every key the types do not know (not only the first, as
    /// `deny_unknown_fields` would) and any syntax or type error with its line.
    pub(crate) fn parse<T: DeserializeOwned>(&mut self) -> Option<T> {
        let mut unknown: Vec<String> = Vec::new();
        let result = toml::Deserializer::parse(&self.text)
            .and_then(|de| serde_ignored::deserialize(de, |path| unknown.push(path.to_string())));
        for path in unknown {
            let segments: Vec<&str> = path.split('.').filter(|s| *s != "?").collect();
            let key = segments.last().copied().unwrap_or_default();
            self.error(
                &segments,
                format!(
                    "unknown key {key:?}: remove it or check its spelling (see docs/config.md)"
                ),
            );
        }
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                let line = err.span().map(|span| self.line_at(span.start));
                let message = err.message().trim().to_owned();
                self.report.problems.push(Problem {
                    severity: Severity::Error,
                    file: self.file.clone(),
                    line,
                    path: String::new(),
                    message,
                });
                None
            }
        }
    }

    fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text
            .as_bytes()
            .get(..end)
            .map_or(0, |before| before.iter().filter(|b| **b == b'\n').count())
            + 1
    }

    /// The line of the deepest key of `path` present in the file.
    fn line_of(&self, path: &[&str]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut node = Node::Item(doc.as_item());
        let mut best = None;
        for segment in path {
            let Some((next, span)) = node.child(segment) else {
                break;
            };
            if let Some(span) = span {
                best = Some(self.line_at(span.start));
            }
            node = next;
        }
        best
    }
}

/// A position in a span-keeping TOML tree: tables, inline tables and arrays are walked alike.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a toml_edit::Item),
    Value(&'a toml_edit::Value),
    Table(&'a toml_edit::Table),
}

impl<'a> Node<'a> {
    /// The child named `segment` (a key, or an index into an array) and the span to report.
    fn child(self, segment: &str) -> Option<(Node<'a>, Option<std::ops::Range<usize>>)> {
        let index = || segment.parse::<usize>().ok();
        match self {
            Node::Table(t) | Node::Item(toml_edit::Item::Table(t)) => t
                .get_key_value(segment)
                .map(|(k, i)| (Node::Item(i), k.span())),
            Node::Item(toml_edit::Item::ArrayOfTables(a)) => {
                let t = a.get(index()?)?;
                Some((Node::Table(t), t.span()))
            }
            Node::Item(toml_edit::Item::Value(v)) | Node::Value(v) => match v {
                toml_edit::Value::InlineTable(t) => t
                    .get_key_value(segment)
                    .map(|(k, i)| (Node::Item(i), k.span())),
                toml_edit::Value::Array(a) => {
                    let v = a.get(index()?)?;
                    Some((Node::Value(v), v.span()))
                }
                _ => None,
            },
            Node::Item(toml_edit::Item::None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"top = 1

[plans.pro]
name = "Pro"

[plans.pro.providers]
openai = { calls = 10, tokens = 5 }

[[keys]]
user = "a"

[[keys]]
user = "b"
plan = "pro"
"#;

    #[test]
    fn paths_resolve_to_lines() {
        let p = FileProblems::new(Path::new("gateway.toml"), TEXT.to_owned());
        assert_eq!(p.line_of(&["top"]), Some(1));
        assert_eq!(p.line_of(&["plans", "pro", "name"]), Some(4));
        assert_eq!(p.line_of(&["plans", "pro", "providers", "openai"]), Some(7));
        assert_eq!(
            p.line_of(&["plans", "pro", "providers", "openai", "tokens"]),
            Some(7)
        );
        assert_eq!(p.line_of(&["keys", "1", "plan"]), Some(14));
        assert_eq!(p.line_of(&["keys", "0"]), Some(9));
        // A missing key resolves to its deepest present parent.
        assert_eq!(p.line_of(&["plans", "pro", "missing"]), Some(3));
    }

    #[test]
    fn problems_render_with_file_and_line() {
        let mut p = FileProblems::new(Path::new("gateway.toml"), TEXT.to_owned());
        p.error(&["plans", "pro", "name"], "bad name");
        assert_eq!(
            p.report.to_string(),
            "gateway.toml:4: error: plans.pro.name: bad name\n"
        );
    }
}
