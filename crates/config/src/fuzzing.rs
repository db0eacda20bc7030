//! The fuzz check for the operator's files, shared by the cargo-fuzz target (`fuzz/`) and the
//! tests that replay its corpus, so both exercise the same code.
//!
//! An input's first byte picks the file — `gateway.toml`, or the pricing file of one provider —
//! and the rest is its text (invalid UTF-8 replaced, as an editor would show it). Whatever the
//! text, loading does not panic; every problem names that file and a line inside it, since
//! `tollgate check`'s `file:line` is how an operator finds the mistake; loading the same text
//! twice gives the same result; and a configuration that loads needs no restart when compared
//! with itself, or a reload of an unchanged file would report one pending.

use std::path::Path;

use tollgate_domain::{PriceBook, Provider};

use crate::problem::FileProblems;
use crate::{Loaded, Report, load_text, pending_restart, pricing};

/// What the fuzz check found.
#[derive(Debug, thiserror::Error)]
pub enum Finding {
    #[error("problem outside the file's {lines} lines: {problem}")]
    LineOutsideFile {
        problem: crate::Problem,
        lines: usize,
    },
    #[error("the same text loaded two ways:\n{first}\n{second}")]
    Unstable { first: String, second: String },
    #[error("the configuration against itself needs a restart for {0:?}")]
    RestartAgainstItself(Vec<&'static str>),
}

/// Runs one fuzz input.
pub fn check(data: &[u8]) -> Result<(), Finding> {
    let [pick, text @ ..] = data else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(text).into_owned();
    let lines = text.lines().count();
    let files = Provider::ALL.len() + 1;
    let report = match usize::from(*pick) % files {
        0 => check_gateway(text)?,
        n => check_price_file(Provider::ALL[n - 1], text)?,
    };
    match report
        .problems
        .iter()
        .find(|p| p.line.is_some_and(|l| l == 0 || l > lines + 1))
    {
        Some(problem) => Err(Finding::LineOutsideFile {
            problem: problem.clone(),
            lines,
        }),
        None => Ok(()),
    }
}

/// Loads `gateway.toml` text with no pricing directory and every key variable set; the report.
fn check_gateway(text: String) -> Result<Report, Finding> {
    let path = Path::new("gateway.toml");
    let no_prices = |_: &Path| (PriceBook::default(), Report::default());
    let env = |_: &str| Some("fuzz-provider-key".to_owned());
    let load = || load_text(path, text.clone(), &no_prices, &env);
    let (first, second) = (load(), load());
    let same = match (&first, &second) {
        (Ok(a), Ok(b)) => a.config == b.config && a.warnings == b.warnings,
        (Err(a), Err(b)) => a == b,
        _ => false,
    };
    if !same {
        return Err(Finding::Unstable {
            first: describe(&first),
            second: describe(&second),
        });
    }
    match first {
        Ok(loaded) => match pending_restart(&loaded.config, &loaded.config) {
            pending if pending.is_empty() => Ok(loaded.warnings),
            pending => Err(Finding::RestartAgainstItself(pending)),
        },
        Err(report) => Ok(report),
    }
}

/// Loads one pricing file's text; the report.
fn check_price_file(provider: Provider, text: String) -> Result<Report, Finding> {
    let path = format!("pricing/{provider}.toml");
    let mut p = FileProblems::new(Path::new(&path), text);
    let _ = pricing::load_file(&mut p, Path::new(&path));
    Ok(p.report)
}

fn describe(result: &Result<Loaded, Report>) -> String {
    match result {
        Ok(loaded) => format!("loaded, warnings:\n{}", loaded.warnings),
        Err(report) => format!("refused:\n{report}"),
    }
}
