//! Reloads the configuration when `gateway.toml` or a file of the pricing directory changes.
//!
//! A thread compares the files' modification times and sizes once a second (no inotify: it also
//! works on network and container file systems, and an edit is seldom in a hurry). A change is
//! applied once the files have stayed the same for half a second, so that an editor's
//! several writes, or a pricing directory copied in file by file, make one reload; an edit
//! already read by a reload through SIGHUP or the admin API is not reloaded again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tollgate_admin::ConfigControl;

use crate::reload::Reloader;

const POLL: Duration = Duration::from_secs(1);
const SETTLE: Duration = Duration::from_millis(500);

/// What is compared: each watched file's path, modification time and size.
pub type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// Starts the watcher thread; it runs until the process exits.
pub fn spawn(reloader: Arc<Reloader>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("tollgate-config-watch".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(POLL);
                let (mut now, changed) = reloader.files_changed();
                if !changed {
                    continue;
                }
                // Wait for the writes to settle.
                loop {
                    std::thread::sleep(SETTLE);
                    let (next, _) = reloader.files_changed();
                    if next == now {
                        break;
                    }
                    now = next;
                }
                // A reload through SIGHUP or the admin API may have read this edit meanwhile.
                if reloader.files_changed().1 {
                    // A refused edit is logged and counted by the reload; the next edit retries.
                    let _ = reloader.reload("watch");
                }
            }
        })
        .map(|_| ())
}

/// `gateway.toml` and the files of the pricing directory as they are now.
pub fn fingerprint(config: &Path, pricing_dir: &Path) -> Fingerprint {
    let mut files: Vec<PathBuf> = std::fs::read_dir(pricing_dir)
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.insert(0, config.to_path_buf());
    files
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (path, modified, len)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_or_a_new_pricing_file_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.toml");
        let pricing = dir.path().join("pricing");
        std::fs::create_dir(&pricing).unwrap();
        std::fs::write(&config, "a").unwrap();
        let before = fingerprint(&config, &pricing);
        assert_eq!(before, fingerprint(&config, &pricing));
        std::fs::write(pricing.join("openai.toml"), "x").unwrap();
        let added = fingerprint(&config, &pricing);
        assert_ne!(before, added);
        std::fs::write(&config, "ab").unwrap();
        assert_ne!(added, fingerprint(&config, &pricing));
    }
}
