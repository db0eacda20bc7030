//! The ledger's key as the binary uses it: read from the configuration, `check`'s warning when
//! there is none, and `tollgate ledger rekey`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use tollgate_config::Config;
use tollgate_ledger::LedgerKey;

/// The key the configuration names, if any (`check` has already verified its form).
pub fn ledger_key(config: &Config) -> anyhow::Result<Option<LedgerKey>> {
    config
        .ledger
        .database_key
        .as_ref()
        .map(|secret| LedgerKey::from_hex(secret.expose()))
        .transpose()
        .context("reading [ledger] database_key_env / database_key_file")
}

/// `check`'s warning for a configuration without a key, in its `file: warning: path: what to
/// do` form; `None` with a key.
pub fn unencrypted_warning(config: &Config) -> Option<String> {
    config.ledger.database_key.is_none().then(|| {
        format!(
            "{}: warning: ledger.database_key_env: usage data is stored unencrypted (the SQLite \
             ledger, the spool, and users' e-mail addresses and names on PostgreSQL); set \
             database_key_env or database_key_file to a key of 64 hex digits (docs/ledger.md, \
             \"Encryption at rest\")",
            config.path.display()
        )
    })
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Re-encrypt the ledger with a new key, or encrypt a plain one (stop the gateway first).
    Rekey(RekeyArgs),
}

#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// The environment variable holding the new key (64 hex digits).
    #[arg(
        long,
        conflicts_with = "new_key_file",
        required_unless_present = "new_key_file"
    )]
    new_key_env: Option<String>,
    /// A file holding the new key (64 hex digits).
    #[arg(long)]
    new_key_file: Option<PathBuf>,
}

pub fn ledger(config_path: &Path, command: LedgerCommand) -> anyhow::Result<ExitCode> {
    let LedgerCommand::Rekey(args) = command;
    let config = match tollgate_config::load(config_path) {
        Ok(loaded) => loaded.config,
        Err(report) => {
            eprint!("{report}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let new = new_key(&args)?;
    let mut ledger = crate::serve::ledger_config(&config)?;
    if ledger.key.as_ref() == Some(&new) {
        anyhow::bail!("the new key is the key the ledger is encrypted with already");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    ledger.spool_takeover = false;
    let report = runtime
        .block_on(tollgate_ledger::rekey(&ledger, &new))
        .with_context(|| format!("rekeying the ledger at {}", config.storage.database_url))?;
    println!(
        "ledger {} with the new key: {} spooled events written first{}{}, {} rejected events re-sealed",
        if report.encrypted_plain_sqlite || ledger.key.is_none() {
            "encrypted"
        } else {
            "re-encrypted"
        },
        report.spooled_events,
        if report.encrypted_plain_sqlite {
            ", the SQLite file encrypted"
        } else {
            ""
        },
        match report.users_resealed {
            0 => String::new(),
            n => format!(", {n} users' personal columns re-sealed"),
        },
        report.rejected_lines,
    );
    println!(
        "now point [ledger] database_key_env or database_key_file at the new key before the \
         gateway starts again"
    );
    Ok(ExitCode::SUCCESS)
}

fn new_key(args: &RekeyArgs) -> anyhow::Result<LedgerKey> {
    let text = match (&args.new_key_env, &args.new_key_file) {
        (Some(var), _) => std::env::var(var)
            .with_context(|| format!("environment variable {var} (the new key) is not set"))?,
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("reading the new key from {}", file.display()))?,
        (None, None) => anyhow::bail!("give the new key with --new-key-env or --new-key-file"),
    };
    LedgerKey::from_hex(&text).context("the new key")
}
