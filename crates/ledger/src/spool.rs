//! The on-disk spool: batches that could not reach the database, kept until they can.
//!
//! A spool is a directory of segment files `NNNNNNNNNNNNNNNNNNNN.spool`, replayed in order of
//! their sequence number. A segment is append-only; each batch is one frame
//!
//! ```text
//! [payload length: u32 LE][CRC-32 of payload: u32 LE][payload: JSON array of UsageEvent]
//! ```
//!
//! With the ledger's key the payload is instead `0x01 · nonce · ciphertext · tag`: the JSON
//! sealed with XChaCha20-Poly1305 under a fresh random nonce per frame (a JSON array starts
//! with `[`, so the two never mix up, and frames spooled before a key was set still replay).
//! A sealed frame that does not open is undecodable, and a spool whose frames the configured
//! key does not open is refused when it is opened rather than quarantined frame by frame.
//!
//! An append counts as written only once `fsync` has returned. A process killed during an
//! append leaves at most one torn frame at the end of the segment it was writing; the reader
//! detects it (short read or checksum mismatch) and ignores it, and since a reopened spool never
//! appends to an existing segment, nothing written later can hide behind a torn frame.
//! Replaying stores each frame with the idempotent batch insert, so replaying a frame twice
//! (after a crash mid-replay) stores its events once.
//!
//! Two tasks share the spool: the writer (batches the database refused, and replay) and the
//! overflow task (events that met a full queue). Both reach it through [`SharedSpool`], whose
//! lock is an async one held across the blocking append, so that a task waiting for the other's
//! `fsync` yields its thread instead of blocking it.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::encryption::Sealer;
use crate::error::{LedgerError, Result};
use crate::event::UsageEvent;

const HEADER_BYTES: usize = 8;
/// The first byte of a sealed payload (a plain one is a JSON array, `[`).
const SEALED: u8 = 0x01;
/// Authenticated with every sealed frame, so that a sealed value of another kind does not open
/// as a frame.
const FRAME_CONTEXT: &[u8] = b"tollgate spool frame";
const SUFFIX: &str = "spool";

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    len: u64,
}

#[derive(Debug)]
struct Active {
    segment: Segment,
    file: File,
}

/// The frames of one segment, as read back.
#[derive(Debug, Default)]
pub(crate) struct SegmentFrames {
    pub frames: Vec<Vec<UsageEvent>>,
    /// Bytes after the last good frame (a torn or corrupt tail), which are ignored.
    pub ignored_bytes: u64,
    /// Frames whose checksum matched but whose events could not be decoded (written by an
    /// incompatible version): skipped, and the segment is kept aside instead of deleted.
    pub undecodable: usize,
}

#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Segments no longer appended to, oldest first.
    sealed: VecDeque<Segment>,
    active: Option<Active>,
    next_seq: u64,
    /// Held (an advisory lock on `dir/lock`) for as long as the spool is open: two processes
    /// appending to one spool would interleave their segments. The OS releases it when the
    /// process dies, SIGKILL included.
    lock: File,
    /// False while another process (the one an upgrade replaces) holds the lock: the spool is
    /// then empty to this process and refuses appends, and is taken over, segments and all,
    /// at the first use after that process has let it go.
    held: bool,
    /// Seals each frame (the ledger's key); `None` writes plain JSON.
    sealer: Option<Sealer>,
}

impl Spool {
    /// Opens a spool no other process holds (what most tests need).
    #[cfg(test)]
    pub fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> Result<Spool> {
        Spool::open_or_wait(dir, max_bytes, segment_bytes, false, None)
    }

    /// Opens (creating if needed) the spool in `dir`. Existing segments are all sealed: new
    /// batches go to a fresh segment. A spool another process holds is refused, or, with
    /// `takeover`, opened unheld and taken over once that process lets it go
    /// ([`Spool::take_over_if_free`]). Frames are sealed with `sealer`; segments holding frames
    /// it cannot open (another key, or sealed frames and no key) are refused.
    pub fn open_or_wait(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        takeover: bool,
        sealer: Option<Sealer>,
    ) -> Result<Spool> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let mut spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: segment_bytes.max(1),
            sealed: VecDeque::new(),
            active: None,
            next_seq: 1,
            lock,
            held: false,
            sealer,
        };
        match spool.lock.try_lock() {
            Ok(()) => {
                spool.adopt_segments()?;
                spool.check_key()?;
            }
            Err(std::fs::TryLockError::WouldBlock) if takeover => {
                tracing::info!(
                    dir = %dir.display(),
                    "the spool is held by the process being replaced; taking it over when it exits"
                );
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LedgerError::Spool {
                    path: dir.display().to_string(),
                    source: std::io::Error::other(
                        "the spool is in use by another ledger process; give each process its own spool_dir",
                    ),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        Ok(spool)
    }

    /// Takes the spool over if the process that held it has let it go; answers whether this
    /// process holds it now.
    pub fn take_over_if_free(&mut self) -> bool {
        if self.held {
            return true;
        }
        if self.lock.try_lock().is_err() {
            return false;
        }
        match self.adopt_segments() {
            Ok(()) => tracing::info!(
                dir = %self.dir.display(),
                segments = self.sealed.len(),
                "spool taken over from the replaced process"
            ),
            // Its segments stay on disk for the next start; this process spools anew.
            Err(e) => {
                self.held = true;
                tracing::error!(error = %e, "reading the spool taken over");
            }
        }
        true
    }

    /// With the lock held: every existing segment, sealed, replayed in order.
    fn adopt_segments(&mut self) -> Result<()> {
        let dir = self.dir.clone();
        let mut sealed = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let path = entry.path();
            let Some(seq) = segment_seq(&path) else {
                continue;
            };
            let len = entry.metadata().map_err(io_err(&path))?.len();
            sealed.push(Segment { seq, path, len });
        }
        sealed.sort_by_key(|s| s.seq);
        self.next_seq = sealed.last().map_or(1, |s| s.seq + 1);
        self.sealed = sealed.into();
        self.held = true;
        Ok(())
    }

    /// Refuses segments whose first frame is sealed and does not open with this spool's key:
    /// replaying them would set every frame aside as undecodable.
    fn check_key(&self) -> Result<()> {
        for segment in &self.sealed {
            let Some(payload) = first_payload(&segment.path)? else {
                continue;
            };
            if payload.first() == Some(&SEALED)
                && open_payload(self.sealer.as_ref(), &payload).is_none()
            {
                return Err(LedgerError::KeyMismatch(format!(
                    "the ledger spool {} holds frames encrypted with {}: configure the key they \
                     were written with ([ledger] database_key_env or database_key_file)",
                    segment.path.display(),
                    if self.sealer.is_some() {
                        "another key than the one configured"
                    } else {
                        "a key, and none is configured"
                    }
                )));
            }
        }
        Ok(())
    }

    /// The sealer frames are written with, for reading them back.
    pub fn sealer(&self) -> Option<Sealer> {
        self.sealer.clone()
    }

    /// Bytes held, replayed or not.
    pub fn bytes(&self) -> u64 {
        self.sealed.iter().map(|s| s.len).sum::<u64>()
            + self.active.as_ref().map_or(0, |a| a.segment.len)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes() == 0 && self.sealed.is_empty()
    }

    /// Appends one batch as a frame and syncs it to disk before returning.
    pub fn append(&mut self, events: &[UsageEvent]) -> Result<u64> {
        if !self.take_over_if_free() {
            return Err(LedgerError::Spool {
                path: self.dir.display().to_string(),
                source: std::io::Error::other(
                    "the spool is still held by the process being replaced; it is taken over when that process exits",
                ),
            });
        }
        let payload = seal_payload(self.sealer.as_ref(), serde_json::to_vec(events)?)?;
        let len = u32::try_from(payload.len()).map_err(|_| LedgerError::SpoolFull {
            bytes: self.bytes(),
            max_bytes: self.max_bytes,
        })?;
        let frame_bytes = HEADER_BYTES as u64 + u64::from(len);
        let held = self.bytes();
        if held + frame_bytes > self.max_bytes {
            return Err(LedgerError::SpoolFull {
                bytes: held,
                max_bytes: self.max_bytes,
            });
        }
        let mut frame = Vec::with_capacity(HEADER_BYTES + payload.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);

        let active = self.active_segment()?;
        let path = active.segment.path.clone();
        let written = active
            .file
            .write_all(&frame)
            .and_then(|()| active.file.sync_data());
        match written {
            Ok(()) => {
                active.segment.len += frame_bytes;
                if active.segment.len >= self.segment_bytes {
                    self.seal_active();
                }
                Ok(frame_bytes)
            }
            Err(source) => {
                // Part of the frame may be on disk: seal the segment so that the torn frame
                // stays last in it, and count its bytes until the segment is replayed.
                if let Ok(meta) = fs::metadata(&path) {
                    active.segment.len = meta.len();
                }
                self.seal_active();
                Err(LedgerError::Spool {
                    path: path.display().to_string(),
                    source,
                })
            }
        }
    }

    /// Stops appending to the current segment; the next append starts a new one.
    pub fn seal_active(&mut self) {
        if let Some(active) = self.active.take() {
            self.sealed.push_back(active.segment);
        }
    }

    /// The oldest segment to replay, sealing the active one if it is the only one left, so
    /// that a segment being replayed is never appended to.
    pub fn oldest_for_replay(&mut self) -> Option<(u64, PathBuf)> {
        if !self.take_over_if_free() {
            return None;
        }
        if self.sealed.is_empty() {
            if self.active.as_ref().is_some_and(|a| a.segment.len > 0) {
                self.seal_active();
            } else {
                return None;
            }
        }
        self.sealed.front().map(|s| (s.seq, s.path.clone()))
    }

    /// Deletes a fully replayed segment.
    pub fn remove(&mut self, seq: u64) -> Result<()> {
        let Some(index) = self.sealed.iter().position(|s| s.seq == seq) else {
            return Ok(());
        };
        if let Some(segment) = self.sealed.remove(index) {
            match fs::remove_file(&segment.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.sealed.insert(index, segment);
                    return Err(LedgerError::Spool {
                        path: self.dir.display().to_string(),
                        source: e,
                    });
                }
            }
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Moves a segment whose frames cannot be decoded aside (`.corrupt`), keeping it for
    /// inspection instead of replaying or deleting it.
    pub fn quarantine(&mut self, seq: u64) -> Result<()> {
        let Some(index) = self.sealed.iter().position(|s| s.seq == seq) else {
            return Ok(());
        };
        if let Some(segment) = self.sealed.remove(index) {
            let target = segment.path.with_extension("corrupt");
            fs::rename(&segment.path, &target).map_err(io_err(&segment.path))?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn active_segment(&mut self) -> Result<&mut Active> {
        if self.active.is_none() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = self.dir.join(format!("{seq:020}.{SUFFIX}"));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            // The new name must be durable too, or a synced frame could vanish with its file.
            sync_dir(&self.dir)?;
            self.active = Some(Active {
                segment: Segment { seq, path, len: 0 },
                file,
            });
        }
        self.active.as_mut().ok_or_else(|| LedgerError::Spool {
            path: self.dir.display().to_string(),
            source: std::io::Error::other("no active segment"),
        })
    }
}

/// The spool as the writer and the overflow task share it.
pub(crate) type SharedSpool = Arc<tokio::sync::Mutex<Spool>>;

/// Appends `events` as one frame on a blocking thread and returns them, with the spool's size
/// after the append. A failed blocking task (the runtime shutting down) loses the events: they
/// come back empty with [`LedgerError::Task`].
pub(crate) async fn append(
    spool: &SharedSpool,
    events: Vec<UsageEvent>,
) -> (Vec<UsageEvent>, Result<u64>) {
    let mut spool = Arc::clone(spool).lock_owned().await;
    let appended = tokio::task::spawn_blocking(move || {
        let result = spool.append(&events).map(|_| spool.bytes());
        (events, result)
    })
    .await;
    appended.unwrap_or_else(|e| (Vec::new(), Err(LedgerError::Task(e))))
}

/// Reads the frames of a segment, opening sealed ones with `sealer`, stopping at the first
/// torn or corrupt frame.
pub(crate) fn read_segment(path: &Path, sealer: Option<&Sealer>) -> Result<SegmentFrames> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err(path))?;
    Ok(decode_frames(&bytes, sealer))
}

/// The payload of a segment's first frame, if it has a whole one.
fn first_payload(path: &Path) -> Result<Option<Vec<u8>>> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut header = [0u8; HEADER_BYTES];
    if file.read_exact(&mut header).is_err() {
        return Ok(None);
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let mut payload = Vec::new();
    file.take(len as u64)
        .read_to_end(&mut payload)
        .map_err(io_err(path))?;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    Ok((payload.len() == len && crc32fast::hash(&payload) == crc).then_some(payload))
}

/// A frame's payload as written: the JSON itself, or sealed with the key.
fn seal_payload(sealer: Option<&Sealer>, json: Vec<u8>) -> Result<Vec<u8>> {
    let Some(sealer) = sealer else {
        return Ok(json);
    };
    let sealed = sealer.seal(&json, FRAME_CONTEXT)?;
    let mut payload = Vec::with_capacity(1 + sealed.len());
    payload.push(SEALED);
    payload.extend_from_slice(&sealed);
    Ok(payload)
}

/// The JSON of a frame's payload: as it is, or opened with the key; `None` if sealed and it
/// does not open.
fn open_payload<'a>(sealer: Option<&Sealer>, payload: &'a [u8]) -> Option<Cow<'a, [u8]>> {
    match payload.split_first() {
        Some((&SEALED, sealed)) => sealer?.open(sealed, FRAME_CONTEXT).map(Into::into),
        _ => Some(payload.into()),
    }
}

fn decode_frames(bytes: &[u8], sealer: Option<&Sealer>) -> SegmentFrames {
    let mut out = SegmentFrames::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some((payload, used)) = frame_payload(&bytes[at..]) else {
            break;
        };
        let decoded = open_payload(sealer, payload)
            .and_then(|json| serde_json::from_slice::<Vec<UsageEvent>>(&json).ok());
        match decoded {
            Some(events) => out.frames.push(events),
            None => out.undecodable += 1,
        }
        at += used;
    }
    out.ignored_bytes = (bytes.len() - at) as u64;
    out
}

/// The payload of the frame at the start of `bytes` and the frame's length, if it is whole and
/// its checksum matches.
fn frame_payload(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let header = bytes.get(..HEADER_BYTES)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let payload = bytes.get(HEADER_BYTES..HEADER_BYTES + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    Some((payload, HEADER_BYTES + len))
}

fn segment_seq(path: &Path) -> Option<u64> {
    if path.extension()? != SUFFIX {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Spool {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::event;

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| segment_seq(p).is_some())
            .collect();
        paths.sort();
        paths
    }

    fn frames_in(dir: &Path) -> Vec<Vec<String>> {
        let mut spool = Spool::open(dir, u64::MAX, 1 << 20).unwrap();
        let mut all = Vec::new();
        while let Some((seq, path)) = spool.oldest_for_replay() {
            let frames = read_segment(&path, spool.sealer().as_ref()).unwrap();
            for f in frames.frames {
                all.push(f.into_iter().map(|e| e.event_id).collect());
            }
            spool.remove(seq).unwrap();
        }
        all
    }

    #[test]
    fn frames_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), u64::MAX, 600).unwrap();
        for i in 0..10 {
            spool.append(&[event(&format!("e{i}"), "u1")]).unwrap();
        }
        assert!(segments(dir.path()).len() > 1, "rotated");
        drop(spool);
        let ids = frames_in(dir.path());
        let expected: Vec<Vec<String>> = (0..10).map(|i| vec![format!("e{i}")]).collect();
        assert_eq!(ids, expected);
        assert!(Spool::open(dir.path(), u64::MAX, 600).unwrap().is_empty());
    }

    #[test]
    fn a_torn_last_frame_is_ignored_and_later_appends_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), u64::MAX, 1 << 20).unwrap();
        spool.append(&[event("a", "u1")]).unwrap();
        spool.append(&[event("b", "u1")]).unwrap();
        drop(spool);
        // Cut the last frame in half, as a SIGKILL during write() could.
        let path = segments(dir.path()).remove(0);
        let len = fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 20).unwrap();
        drop(file);

        let mut spool = Spool::open(dir.path(), u64::MAX, 1 << 20).unwrap();
        spool.append(&[event("c", "u1")]).unwrap();
        drop(spool);
        assert_eq!(frames_in(dir.path()), vec![vec!["a"], vec!["c"]]);
    }

    #[test]
    fn a_flipped_byte_stops_the_segment_at_the_bad_frame() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), u64::MAX, 1 << 20).unwrap();
        spool.append(&[event("a", "u1")]).unwrap();
        spool.append(&[event("b", "u1")]).unwrap();
        drop(spool);
        let path = segments(dir.path()).remove(0);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x55;
        fs::write(&path, &bytes).unwrap();
        let frames = read_segment(&path, None).unwrap();
        assert_eq!(frames.frames.len(), 1);
        assert!(frames.ignored_bytes > 0);
    }

    #[test]
    fn a_spool_is_open_in_one_place_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Spool::open(dir.path(), u64::MAX, 1 << 20).unwrap();
        let err = Spool::open(dir.path(), u64::MAX, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        Spool::open(dir.path(), u64::MAX, 1 << 20).unwrap();
    }

    #[test]
    fn a_spool_held_elsewhere_is_taken_over_with_its_segments_once_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Spool::open(dir.path(), u64::MAX, 1 << 20).unwrap();
        first.append(&[event("old", "u1")]).unwrap();
        let mut second = Spool::open_or_wait(dir.path(), u64::MAX, 1 << 20, true, None).unwrap();
        assert!(second.is_empty());
        assert!(second.oldest_for_replay().is_none());
        let err = second.append(&[event("new", "u1")]).unwrap_err();
        assert!(err.to_string().contains("process being replaced"), "{err}");
        first.append(&[event("old2", "u1")]).unwrap();
        drop(first);
        assert!(second.take_over_if_free());
        assert!(!second.is_empty());
        second.append(&[event("new", "u1")]).unwrap();
        drop(second);
        assert_eq!(
            frames_in(dir.path()),
            vec![
                vec!["old".to_owned()],
                vec!["old2".to_owned()],
                vec!["new".to_owned()]
            ]
        );
    }

    #[test]
    fn sealed_frames_hide_their_events_and_open_only_with_their_key() {
        use crate::encryption::LedgerKey;
        let key = LedgerKey::from_hex(&"ab".repeat(32)).unwrap();
        let other = LedgerKey::from_hex(&"cd".repeat(32)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // A plain frame from before the key was set, then sealed ones.
        let mut spool = Spool::open(dir.path(), u64::MAX, 1 << 20).unwrap();
        spool.append(&[event("plain", "u1")]).unwrap();
        drop(spool);
        let mut spool = Spool::open_or_wait(
            dir.path(),
            u64::MAX,
            1 << 20,
            false,
            Some(key.spool_sealer()),
        )
        .unwrap();
        spool.append(&[event("sealed-1", "alice-canary")]).unwrap();
        spool.append(&[event("sealed-2", "alice-canary")]).unwrap();
        drop(spool);
        let segments = segments(dir.path());
        let sealed = fs::read(&segments[1]).unwrap();
        for canary in ["alice-canary", "sealed-1", "gpt-4o"] {
            assert!(
                !sealed.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "{canary} readable in a sealed segment"
            );
        }

        for (sealer, expect) in [
            (None, "a key, and none is configured"),
            (
                Some(other.spool_sealer()),
                "another key than the one configured",
            ),
        ] {
            let err =
                Spool::open_or_wait(dir.path(), u64::MAX, 1 << 20, false, sealer).unwrap_err();
            assert!(err.to_string().contains(expect), "{err}");
        }
        // Read with the wrong key regardless, the sealed frames are undecodable, not events.
        let wrong = read_segment(&segments[1], Some(&other.spool_sealer())).unwrap();
        assert_eq!((wrong.frames.len(), wrong.undecodable), (0, 2));

        let mut spool = Spool::open_or_wait(
            dir.path(),
            u64::MAX,
            1 << 20,
            false,
            Some(key.spool_sealer()),
        )
        .unwrap();
        let mut ids = Vec::new();
        while let Some((seq, path)) = spool.oldest_for_replay() {
            let frames = read_segment(&path, spool.sealer().as_ref()).unwrap();
            assert_eq!(frames.undecodable, 0);
            ids.extend(frames.frames.into_iter().flatten().map(|e| e.event_id));
            spool.remove(seq).unwrap();
        }
        assert_eq!(ids, ["plain", "sealed-1", "sealed-2"]);
    }

    #[test]
    fn a_full_spool_refuses_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 700, 1 << 20).unwrap();
        spool.append(&[event("a", "u1")]).unwrap();
        let err = spool
            .append(&[event("b", "u1"), event("c", "u1")])
            .unwrap_err();
        assert!(matches!(err, LedgerError::SpoolFull { .. }), "{err}");
        drop(spool);
        assert_eq!(frames_in(dir.path()), vec![vec!["a"]]);
    }
}
