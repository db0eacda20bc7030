//! Reloads the configuration when `gateway.toml` or a file of the pricing directory changes.
//!
//! A thread compares the files' modification times and sizes once a second (no inotify: it also
//! works on network and container file systems, and an edit is seldom in a hurry). A change is
//! applied once the files have stayed the same for half a second, so that an editor's
//! several writes, or a pricing directory copied in file by file, make one reload; an edit
//! already read by a reload through SIGHUP or the admin API is not reloaded again.
//!
//! Files published through a symlink swap are compared by the file each path resolves to, not
//! only by its time and size: Kubernetes updates a mounted ConfigMap by writing a new
//! timestamped directory and renaming its `..data` link over the old one, and release
//! directories deployed with their modification times kept (`rsync -a`, `cp -p`) switch the
//! same way; an edit of the same size whose times cannot be told apart is seen all the same.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tollgate_admin::ConfigControl;

use crate::reload::Reloader;

const POLL: Duration = Duration::from_secs(1);
const SETTLE: Duration = Duration::from_millis(500);

/// What is compared: each watched file's path, the file it resolves to through symlinks,
/// modification time and size.
pub type Fingerprint = Vec<(PathBuf, Option<PathBuf>, Option<SystemTime>, u64)>;

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
            let resolved = std::fs::canonicalize(&path).ok();
            let meta = std::fs::metadata(&path).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (path, resolved, modified, len)
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

    /// Publishes `files` into `dir` as the kubelet updates a mounted ConfigMap: a new
    /// timestamped directory, a `..data` link renamed over the old one, and each visible name
    /// a link through `..data`. The files' times are set alike, as when they are kept.
    fn publish_like_a_config_map(dir: &Path, version: &str, files: &[(&str, &str)]) {
        let data = dir.join(format!("..{version}"));
        std::fs::create_dir(&data).unwrap();
        let kept = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (name, text) in files {
            let file = std::fs::File::create(data.join(name)).unwrap();
            std::io::Write::write_all(&mut &file, text.as_bytes()).unwrap();
            file.set_modified(kept).unwrap();
        }
        std::os::unix::fs::symlink(format!("..{version}"), dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        for (name, _) in files {
            let link = dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), link).unwrap();
            }
        }
    }

    #[test]
    fn a_config_map_update_changes_the_fingerprint_even_with_the_same_times_and_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let (config_dir, pricing) = (dir.path().join("config"), dir.path().join("pricing"));
        std::fs::create_dir(&config_dir).unwrap();
        std::fs::create_dir(&pricing).unwrap();
        let config = config_dir.join("gateway.toml");
        publish_like_a_config_map(
            &config_dir,
            "2026_12_06_01",
            &[("gateway.toml", "calls = 10")],
        );
        publish_like_a_config_map(&pricing, "2026_12_06_01", &[("openai.toml", "a = 1")]);
        let before = fingerprint(&config, &pricing);
        assert_eq!(before, fingerprint(&config, &pricing));

        publish_like_a_config_map(
            &config_dir,
            "2026_12_06_02",
            &[("gateway.toml", "calls = 20")],
        );
        let config_updated = fingerprint(&config, &pricing);
        assert_ne!(
            before[0], config_updated[0],
            "gateway.toml's update was not seen"
        );

        publish_like_a_config_map(&pricing, "2026_12_06_02", &[("openai.toml", "a = 2")]);
        let pricing_updated = fingerprint(&config, &pricing);
        let openai = |f: &Fingerprint| f.iter().find(|e| e.0.ends_with("openai.toml")).cloned();
        assert_ne!(openai(&config_updated), openai(&pricing_updated));
    }
}
