//! The `tollgate` binary: the gateway and the operator's tools around it.

mod check;
mod import;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A metering reverse proxy for AI and search APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway with the given configuration.
    Run {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Validate gateway.toml and every pricing file; report every problem with its line.
    Check {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        /// Treat warnings (such as a provider key missing from the environment) as errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Work with pricing files.
    Pricing {
        #[command(subcommand)]
        command: PricingCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PricingCommand {
    /// Convert LiteLLM's model_prices_and_context_window.json into a pricing/<provider>.toml.
    ImportLitellm(import::ImportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => check::serve_preview(&config),
        Command::Check {
            config,
            deny_warnings,
        } => check::run(&config, deny_warnings),
        Command::Pricing {
            command: PricingCommand::ImportLitellm(args),
        } => import::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
