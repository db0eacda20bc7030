//! Replacing a running gateway without closing its ports: `tollgate run --upgrade`.
//!
//! A running gateway holds its pid file locked (an advisory lock the OS drops when the process
//! ends, however it ends). A new process started with `--upgrade` finds the running one
//! through that file, asks it to hand over (SIGQUIT: Pingora's graceful upgrade, which sends
//! the listening sockets over `[proxy] upgrade_socket` and then drains), and receives them in
//! Pingora's bootstrap; it then writes its own pid file in place of the old one. The lock
//! tells it when the old process has ended — its calls finished or recorded, its ledger
//! flushed — which is when in-process counters may be read from the ledger. Without
//! `--upgrade`, a locked pid file means a gateway already runs there, and the start is refused.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The running gateway an upgrade replaces.
#[derive(Debug)]
pub struct Predecessor {
    pub pid: i32,
    /// Its pid file, opened before this process replaces it: its lock is the old process's.
    file: File,
}

/// This process's pid file, locked for as long as the process runs.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: File,
}

/// Checks the pid file before a start: with `upgrading`, answers the running gateway to
/// replace; without, makes sure none runs.
pub fn find_running(path: &Path, upgrading: bool) -> anyhow::Result<Option<Predecessor>> {
    let opened = OpenOptions::new().read(true).write(true).open(path);
    let running = match opened {
        Ok(file) => match file.try_lock() {
            Ok(()) => None,
            Err(std::fs::TryLockError::WouldBlock) => Some(file),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    match (running, upgrading) {
        (None, false) => Ok(None),
        (None, true) => bail!(
            "--upgrade: no running gateway holds the pid file {} (proxy.pid_file); start \
             without --upgrade",
            path.display()
        ),
        (Some(mut file), upgrading) => {
            let mut text = String::new();
            file.read_to_string(&mut text)
                .with_context(|| format!("reading {}", path.display()))?;
            let pid: i32 = text
                .trim()
                .parse()
                .with_context(|| format!("{} does not hold a pid ({text:?})", path.display()))?;
            if !upgrading {
                bail!(
                    "a gateway is already running with this configuration (pid {pid}, pid file \
                     {}): to replace it without closing its ports run `tollgate run --upgrade`; \
                     to stop it send it SIGTERM",
                    path.display()
                );
            }
            Ok(Some(Predecessor { pid, file }))
        }
    }
}

impl Predecessor {
    /// Asks the running gateway to hand its listening sockets over and drain (SIGQUIT). It
    /// retries sending them for a few seconds, so this may come just before Pingora's bootstrap
    /// starts listening for them.
    pub fn hand_over(&self) -> anyhow::Result<()> {
        kill(Pid::from_raw(self.pid), Signal::SIGQUIT)
            .with_context(|| format!("sending SIGQUIT to the running gateway (pid {})", self.pid))
    }

    /// Runs `then` on a thread of its own once the old process has ended (its lock released).
    pub fn when_gone(self, then: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
        let Predecessor { pid, file } = self;
        std::thread::Builder::new()
            .name("tollgate-upgrade".to_owned())
            .spawn(move || {
                if let Err(e) = file.lock() {
                    tracing::error!(error = %e, pid, "waiting for the replaced gateway to exit");
                }
                tracing::info!(pid, "the replaced gateway has exited");
                then();
            })
            .context("starting the thread that waits for the replaced gateway")?;
        Ok(())
    }
}

impl PidFile {
    /// Writes this process's pid to `path`, locked, replacing any file there at once (a new
    /// file renamed over it: a reader sees the old pid or the new, never a torn one).
    pub fn write(path: &Path) -> anyhow::Result<PidFile> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the directory of {}", path.display()))?;
        }
        let pid = std::process::id();
        let mut staged = path.as_os_str().to_owned();
        staged.push(format!(".{pid}"));
        let staged = PathBuf::from(staged);
        let mut file = File::create(&staged)
            .with_context(|| format!("writing the pid file {}", staged.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", staged.display()))?;
        writeln!(file, "{pid}").with_context(|| format!("writing {}", staged.display()))?;
        std::fs::rename(&staged, path)
            .with_context(|| format!("moving the pid file into place at {}", path.display()))?;
        Ok(PidFile {
            path: path.to_owned(),
            file,
        })
    }

    /// Removes the pid file at exit, unless a newer process has put its own in its place.
    pub fn remove(&self) {
        let ours = self.file.metadata().map(|m| (m.dev(), m.ino()));
        let there = std::fs::metadata(&self.path).map(|m| (m.dev(), m.ino()));
        if let (Ok(ours), Ok(there)) = (ours, there)
            && ours == there
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_pid_file_is_a_running_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/t.pid");
        assert!(find_running(&path, false).unwrap().is_none());
        let err = find_running(&path, true).unwrap_err().to_string();
        assert!(err.contains("start without --upgrade"), "{err}");

        let ours = PidFile::write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        let err = find_running(&path, false).unwrap_err().to_string();
        assert!(err.contains("already running"), "{err}");
        let found = find_running(&path, true).unwrap().unwrap();
        assert_eq!(found.pid as u32, std::process::id());

        // A newer process's file is left in place; our own is removed.
        drop(found);
        let newer = PidFile::write(&path).unwrap();
        ours.remove();
        assert!(path.exists());
        newer.remove();
        assert!(!path.exists());
    }

    #[test]
    fn an_unlocked_pid_file_is_left_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pid");
        std::fs::write(&path, "12345\n").unwrap();
        assert!(find_running(&path, false).unwrap().is_none());
        assert!(find_running(&path, true).is_err());
    }
}
