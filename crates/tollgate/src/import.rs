//! `tollgate pricing import-litellm`: LiteLLM's price file → one of our pricing files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::NaiveDate;
use tollgate_domain::Provider;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// LiteLLM's model_prices_and_context_window.json.
    file: PathBuf,
    /// The provider whose entries to import.
    #[arg(long)]
    provider: Provider,
    /// Where the file came from, recorded as each entry's source.
    #[arg(long)]
    source: Option<String>,
    /// The date the prices took effect (default: today, UTC).
    #[arg(long)]
    effective: Option<NaiveDate>,
}

pub fn run(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let json = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let source = args.source.clone().unwrap_or_else(|| {
        format!(
            "LiteLLM model_prices_and_context_window.json ({})",
            args.file.display()
        )
    });
    let effective = args
        .effective
        .unwrap_or_else(|| chrono::Utc::now().date_naive());
    let toml = tollgate_config::litellm::import(&json, args.provider, &source, effective)?;
    print!("{toml}");
    Ok(ExitCode::SUCCESS)
}
