//! The `tollgate` binary: the gateway and the operator's tools around it. Its command line is
//! [`main`]; `src/main.rs` only calls it, so the end-to-end tests can build the same program
//! under a name of their own.

mod accounts;
mod admin_server;
mod check;
mod encryption;
mod health;
mod import;
mod inspect_usage;
mod log_writer;
mod logging;
mod metrics;
mod reload;
mod serve;
mod shutdown;
mod upgrade;
mod watch;

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
        /// Replace the gateway running with this configuration without closing its ports: take
        /// its listening sockets (it is sent SIGQUIT through its pid file) while it drains.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate gateway.toml and every pricing file; report every problem with its line.
    Check {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        /// Treat warnings (such as a provider key missing from the environment) as errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Describe what `run` would serve with this configuration, without serving it.
    Describe {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Apply the ledger's database migrations (run also applies them at start).
    Migrate {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        /// A database URL instead of the configuration's.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Scan a saved response body as the proxy would and print the usage it reads, as JSON.
    InspectUsage(inspect_usage::InspectArgs),
    /// Create, list and re-plan users in the ledger.
    Users {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        #[command(subcommand)]
        command: accounts::UsersCommand,
    },
    /// Issue, list, change and revoke users' Tollgate keys.
    Keys {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        #[command(subcommand)]
        command: accounts::KeysCommand,
    },
    /// Print a user's usage in a billing period (JSON, as the admin API answers).
    Usage {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        #[command(flatten)]
        args: accounts::UsageArgs,
    },
    /// Work with the ledger's encryption: `rekey` changes its key or encrypts a plain ledger.
    Ledger {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        #[command(subcommand)]
        command: encryption::LedgerCommand,
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

/// Parses the command line and runs what it asks for; the process exits with what it returns.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` installs the log in the format its configuration names, once it has read it.
    let _log = (!matches!(cli.command, Command::Run { .. }))
        .then(|| logging::init(tollgate_config::LogFormat::Text));
    let result = match cli.command {
        Command::Run { config, upgrade } => serve::run(&config, upgrade),
        Command::Check {
            config,
            deny_warnings,
        } => check::run(&config, deny_warnings),
        Command::Describe { config } => check::serve_preview(&config),
        Command::Migrate {
            config,
            database_url,
        } => check::migrate(&config, database_url),
        Command::InspectUsage(args) => inspect_usage::run(&args).map(|json| {
            println!("{json}");
            ExitCode::SUCCESS
        }),
        Command::Users { config, command } => accounts::users(&config, command),
        Command::Keys { config, command } => accounts::keys(&config, command),
        Command::Usage { config, args } => accounts::usage(&config, args),
        Command::Ledger { config, command } => encryption::ledger(&config, command),
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
