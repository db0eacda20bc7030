//! The process's log: lines to stderr through the buffered writer (`log_writer`, which also
//! redacts credentials), as text or as JSON (`[log] format`), at a level that starts from
//! `RUST_LOG` (default `info`) and can be changed while the gateway runs (`PUT
//! /api/admin/log-level`).

use std::sync::{Arc, Mutex, PoisonError};

use tollgate_admin::{InvalidLogLevel, LogControl};
use tollgate_config::LogFormat;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

use crate::log_writer::{BufferedLog, Flusher};

/// The installed log: the guard that writes out what is buffered, and the level's control.
#[derive(Debug)]
pub struct Logging {
    /// Writes out what is buffered when the log is dropped.
    _flusher: Flusher,
    pub level: Arc<Level>,
}

/// Installs the process's log in `format`. Once per process: a second call leaves the first.
pub fn init(format: LogFormat) -> Logging {
    let (writer, flusher) = BufferedLog::new(Box::new(std::io::stderr()), true);
    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let (filter, directive) = match EnvFilter::try_new(&directive) {
        Ok(filter) => (filter, directive),
        Err(e) => {
            eprintln!("RUST_LOG={directive:?} is not a log filter ({e}): logging at info");
            (EnvFilter::new("info"), "info".to_owned())
        }
    };
    let (filter, handle) = reload::Layer::new(filter);
    let (text, json) = match format {
        LogFormat::Text => (
            Some(
                fmt::layer()
                    .with_writer(writer)
                    // Colours for a person at a terminal; plain lines for files and collectors.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                fmt::layer()
                    .json()
                    // The event's fields at the top level, beside timestamp, level and target.
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(writer),
            ),
        ),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .try_init();
    if installed.is_ok() {
        // `log` records (Pingora's) pass at the level installed; keep them in step with changes.
        log::set_max_level(as_log(LevelFilter::current()));
    }
    Logging {
        _flusher: flusher,
        level: Arc::new(Level {
            handle,
            directive: Mutex::new(directive),
        }),
    }
}

/// The log's filter, changed through the admin API.
pub struct Level {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The directive in force, as it was given.
    directive: Mutex<String>,
}

impl std::fmt::Debug for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Level")
            .field("directive", &self.level())
            .finish_non_exhaustive()
    }
}

impl LogControl for Level {
    fn level(&self) -> String {
        self.directive
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_level(&self, directive: &str) -> Result<String, InvalidLogLevel> {
        let filter = EnvFilter::try_new(directive).map_err(|e| {
            InvalidLogLevel(format!(
                "{directive:?} is neither a level (error, warn, info, debug, trace) nor filter \
                 directives such as \"warn,tollgate=debug\": {e}"
            ))
        })?;
        let mut current = self
            .directive
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.handle
            .reload(filter)
            .map_err(|e| InvalidLogLevel(format!("the log level could not be changed: {e}")))?;
        log::set_max_level(as_log(LevelFilter::current()));
        *current = directive.to_owned();
        Ok(current.clone())
    }
}

fn as_log(level: LevelFilter) -> log::LevelFilter {
    if level == LevelFilter::OFF {
        log::LevelFilter::Off
    } else if level == LevelFilter::ERROR {
        log::LevelFilter::Error
    } else if level == LevelFilter::WARN {
        log::LevelFilter::Warn
    } else if level == LevelFilter::INFO {
        log::LevelFilter::Info
    } else if level == LevelFilter::DEBUG {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Trace
    }
}
