//! Live configuration: `gateway.toml` and the pricing files read again (on SIGHUP, on
//! `POST /api/admin/reload`, or when the watcher sees them change), checked exactly as
//! `tollgate check` checks them, and swapped in as one new snapshot — or refused whole, with
//! every problem logged and answered, while the snapshot in force keeps serving.
//!
//! Counters, reservations of calls in flight and alerts already raised live outside the
//! snapshot and are not touched. Settings the process built its listeners, threads, counter
//! store and ledger from are kept as they started and reported as pending a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use tollgate_admin::{ConfigControl, ConfigStatus, RefusedReload};
use tollgate_config::{Config, Loaded, Report};
use tollgate_proxy::{Metrics, Snapshot, SnapshotCell};

use crate::watch::{Fingerprint, fingerprint};

/// Loads and applies the configuration; one reload at a time.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    /// The configuration the process started with: what its listeners, threads, counter store
    /// and ledger were built from.
    started: Arc<Config>,
    snapshots: Arc<SnapshotCell>,
    metrics: Arc<Metrics>,
    /// The status of the configuration in force; held for the whole of a reload, so that two
    /// reloads (a signal and the watcher, say) never interleave.
    status: Mutex<ConfigStatus>,
    /// The files as the latest load (or refused reload) found them, so that the watcher
    /// reloads for an edit nobody has loaded yet, and only once for each.
    files: Mutex<Fingerprint>,
}

impl Reloader {
    /// For a gateway serving `loaded`, read from `path` at start.
    pub fn new(
        path: &Path,
        started: Arc<Config>,
        warnings: &Report,
        snapshots: Arc<SnapshotCell>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        let status = ConfigStatus {
            version: version(path, &started),
            loaded_at: now(),
            trigger: "start".to_owned(),
            path: path.display().to_string(),
            pending_restart: Vec::new(),
            warnings: lines(warnings),
            last_refused: None,
        };
        metrics.config_loaded(&status.version, &status.loaded_at);
        let files = fingerprint(path, &started.pricing.dir);
        Reloader {
            path: path.to_path_buf(),
            started,
            snapshots,
            metrics,
            status: Mutex::new(status),
            files: Mutex::new(files),
        }
    }

    /// The files as they are now, and whether they differ from what the latest reload read.
    pub fn files_changed(&self) -> (Fingerprint, bool) {
        let now = fingerprint(&self.path, &self.pricing_dir());
        let changed = *self.files.lock().unwrap_or_else(PoisonError::into_inner) != now;
        (now, changed)
    }

    /// The pricing directory of the configuration in force (the watcher watches it).
    pub fn pricing_dir(&self) -> PathBuf {
        self.snapshots.load().config.pricing.dir.clone()
    }

    fn apply(&self, trigger: &str, status: &mut ConfigStatus) -> Result<(), Vec<String>> {
        let Loaded { config, warnings } =
            tollgate_config::load(&self.path).map_err(|report| lines(&report))?;
        let config = Arc::new(config);
        let snapshot = Snapshot::build(Arc::clone(&config))
            .map_err(|e| vec![format!("{}: error: {e}", self.path.display())])?;
        let previous = self.snapshots.load();
        let mut notes = lines(&warnings);
        notes.extend(removed_plans(&previous.config, &config));
        let pending: Vec<String> = tollgate_config::pending_restart(&self.started, &config)
            .into_iter()
            .map(str::to_owned)
            .collect();
        self.snapshots.store(snapshot);
        *status = ConfigStatus {
            version: version(&self.path, &config),
            loaded_at: now(),
            trigger: trigger.to_owned(),
            path: self.path.display().to_string(),
            pending_restart: pending,
            warnings: notes,
            last_refused: None,
        };
        Ok(())
    }
}

impl ConfigControl for Reloader {
    fn status(&self) -> ConfigStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn reload(&self, trigger: &str) -> Result<ConfigStatus, Vec<String>> {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        // Taken before reading: an edit made while loading is seen as a change, and reloaded.
        let before = fingerprint(&self.path, &self.pricing_dir());
        let known_warnings = status.warnings.clone();
        let outcome = self.apply(trigger, &mut status);
        let after = match &outcome {
            // The new configuration may name another pricing directory.
            Ok(()) => fingerprint(&self.path, &self.pricing_dir()),
            Err(_) => before,
        };
        *self.files.lock().unwrap_or_else(PoisonError::into_inner) = after;
        match outcome {
            Ok(()) => {
                self.metrics.config_reload(true);
                self.metrics
                    .config_loaded(&status.version, &status.loaded_at);
                // Warnings already reported for the configuration before are not repeated.
                for warning in status
                    .warnings
                    .iter()
                    .filter(|w| !known_warnings.contains(w))
                {
                    tracing::warn!(trigger, "{warning}");
                }
                if status.pending_restart.is_empty() {
                    tracing::info!(trigger, version = %status.version, "configuration reloaded");
                } else {
                    tracing::warn!(
                        trigger,
                        version = %status.version,
                        pending_restart = %status.pending_restart.join(", "),
                        "configuration reloaded; these settings changed but apply only after a \
                         restart, and the process keeps the ones it started with"
                    );
                }
                Ok(status.clone())
            }
            Err(problems) => {
                self.metrics.config_reload(false);
                // One line per problem, each naming its file and line and what to do.
                for problem in &problems {
                    tracing::error!(
                        trigger,
                        "configuration not reloaded, the one in force keeps serving: {problem}"
                    );
                }
                status.last_refused = Some(RefusedReload {
                    at: now(),
                    trigger: trigger.to_owned(),
                    problems: problems.clone(),
                });
                Err(problems)
            }
        }
    }
}

/// What users notice of a plan that is gone: those subscribed to it fall back to
/// `default_plan`, or are refused without one.
fn removed_plans(previous: &Config, new: &Config) -> Vec<String> {
    previous
        .plans
        .keys()
        .filter(|id| !new.plans.contains_key(*id))
        .map(|id| match &new.default_plan {
            Some(default) => format!(
                "plan {id:?} was removed: users subscribed to it are served on default_plan \
                 {default:?} until they are moved to a configured plan"
            ),
            None => format!(
                "plan {id:?} was removed and there is no default_plan: users subscribed to it \
                 are refused until they are moved to a configured plan"
            ),
        })
        .collect()
}

fn lines(report: &Report) -> Vec<String> {
    report.problems.iter().map(ToString::to_string).collect()
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The first 12 hex digits of a SHA-256 over `gateway.toml` and every pricing file (name and
/// content, in name order): the same files give the same version on every instance.
fn version(path: &Path, config: &Config) -> String {
    let mut digest = Sha256::new();
    digest.update(std::fs::read(path).unwrap_or_default());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&config.pricing.dir)
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for file in files {
        digest.update(file.file_name().unwrap_or_default().as_encoded_bytes());
        digest.update([0]);
        digest.update(std::fs::read(&file).unwrap_or_default());
    }
    digest
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reloads on every SIGHUP, on `runtime` (the reload itself on its blocking threads).
pub fn on_sighup(reloader: Arc<Reloader>, runtime: &tokio::runtime::Handle) -> std::io::Result<()> {
    let _entered = runtime.enter();
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    runtime.spawn(async move {
        while hangups.recv().await.is_some() {
            let reloader = Arc::clone(&reloader);
            // A refused reload is logged and counted by the reload itself.
            let _ = tokio::task::spawn_blocking(move || reloader.reload("sighup")).await;
        }
    });
    Ok(())
}
