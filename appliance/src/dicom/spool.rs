//! The spool: where received objects become durable.
//!
//! ```text
//! <spool>/tmp/<n>.part                      while fragments arrive (streamed, hashed)
//!        /<aa>/<study hash>/<series hash>/<instance hash>.dcm   after commit
//!        /quarantine/<instance hash or n>.dcm                   objects we could not accept
//! ```
//!
//! An object is written as a DICOM Part 10 file: preamble, file meta information built from
//! the command and the negotiated transfer syntax, then the data set bytes exactly as they
//! arrived. [`SpoolWriter::finish`] flushes and fsyncs the temporary file; [`Spool::commit`]
//! renames it to its final name and fsyncs the directories it touched. Only after that does
//! the caller index it and answer Success — that is the point where a C-STORE is durable.
//!
//! Final names are SHA-256 hashes of the UIDs (with a fixed domain prefix), never the UIDs:
//! a UID is peer-controlled text, and one like `../../etc` must not become a path.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};

/// Size of the write buffer in front of each temporary file.
const WRITE_BUFFER: usize = 256 * 1024;

/// The spool directory tree.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    tmp: PathBuf,
    quarantine: PathBuf,
    high_water_percent: f64,
    next: AtomicU64,
}

impl Spool {
    /// Opens (creating if needed) the spool under `root` and removes temporary files left by
    /// a crash (they were never acknowledged).
    ///
    /// # Errors
    /// I/O errors creating or cleaning the directories.
    pub fn open(root: &Path, high_water_percent: f64) -> io::Result<Self> {
        let tmp = root.join("tmp");
        let quarantine = root.join("quarantine");
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(&quarantine)?;
        for entry in std::fs::read_dir(&tmp)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "part") {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(Self {
            root: root.to_owned(),
            tmp,
            quarantine,
            high_water_percent,
            next: AtomicU64::new(0),
        })
    }

    /// The spool's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the spool's file system is used above the high-water mark.
    ///
    /// # Errors
    /// The `statvfs` error.
    pub fn over_high_water(&self) -> io::Result<bool> {
        let st = rustix::fs::statvfs(&self.root).map_err(io::Error::from)?;
        let total = st.f_blocks as f64;
        if total <= 0.0 {
            return Ok(true);
        }
        let used = (st.f_blocks - st.f_bfree) as f64;
        Ok(100.0 * used / total >= self.high_water_percent)
    }

    /// Starts a temporary file holding `preamble_and_meta` (the Part 10 header).
    ///
    /// # Errors
    /// I/O errors creating or writing the file.
    pub async fn create(&self, preamble_and_meta: &[u8]) -> io::Result<SpoolWriter> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}-{n}.part", std::process::id()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        let mut w = SpoolWriter {
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            guard: TempGuard(Some(path)),
            hasher: Sha256::new(),
            bytes: 0,
        };
        w.write_raw(preamble_and_meta).await?;
        Ok(w)
    }

    /// Where the instance with these UIDs lives once committed.
    pub fn final_path(&self, study_uid: &str, series_uid: &str, sop_uid: &str) -> PathBuf {
        let study = uid_hash("study", study_uid);
        let series = uid_hash("series", series_uid);
        let sop = uid_hash("instance", sop_uid);
        self.root
            .join(&study[..2])
            .join(&study[..32])
            .join(&series[..32])
            .join(format!("{sop}.dcm"))
    }

    /// Renames a finished temporary file to `dest` (replacing an earlier copy of the same
    /// instance) and fsyncs every directory whose entries changed. Returns whether `dest`
    /// existed before (a duplicate).
    ///
    /// # Errors
    /// I/O errors; the temporary file is removed on failure.
    pub async fn commit(&self, written: Written, dest: &Path) -> io::Result<bool> {
        let parent = dest
            .parent()
            .ok_or_else(|| io::Error::other("spool path without a parent"))?
            .to_owned();
        let root = self.root.clone();
        let dest = dest.to_owned();
        let src = written.guard.0.clone().unwrap_or_default();
        let duplicate = tokio::task::spawn_blocking(move || -> io::Result<bool> {
            let mut created = Vec::new();
            let mut dir = parent.clone();
            while !dir.exists() && dir != root {
                created.push(dir.clone());
                match dir.parent() {
                    Some(p) => dir = p.to_owned(),
                    None => break,
                }
            }
            std::fs::create_dir_all(&parent)?;
            let duplicate = dest.exists();
            std::fs::rename(&src, &dest)?;
            // The new name must survive a crash: sync the directory holding it, and the
            // parents of any directory just created (their entries changed too).
            sync_dir(&parent)?;
            for d in &created {
                if let Some(p) = d.parent() {
                    sync_dir(p)?;
                }
            }
            // The temp directory is not synced: if its old entry reappears after a crash, the
            // start-up sweep removes it.
            Ok(duplicate)
        })
        .await
        .map_err(io::Error::other)??;
        written.guard.disarm();
        Ok(duplicate)
    }

    /// Moves a finished temporary file to the quarantine (kept for inspection, never indexed)
    /// and returns its new path.
    ///
    /// # Errors
    /// I/O errors; the temporary file is removed on failure.
    pub async fn quarantine(&self, written: Written) -> io::Result<PathBuf> {
        let dest = self.quarantine.join(format!("{}.dcm", written.sha256));
        let src = written.guard.0.clone().unwrap_or_default();
        tokio::fs::rename(&src, &dest).await?;
        written.guard.disarm();
        Ok(dest)
    }
}

/// Lowercase hex SHA-256 of `uid` under a fixed domain prefix.
fn uid_hash(kind: &str, uid: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"vertebrad-spool/v1/");
    h.update(kind.as_bytes());
    h.update(b"/");
    h.update(uid.as_bytes());
    hex::encode(h.finalize())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes the temporary file when dropped armed (an aborted association, a failed write).
#[derive(Debug)]
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A temporary spool file being written.
#[derive(Debug)]
pub struct SpoolWriter {
    file: Option<BufWriter<tokio::fs::File>>,
    guard: TempGuard,
    hasher: Sha256,
    bytes: u64,
}

impl SpoolWriter {
    /// Appends data-set bytes.
    ///
    /// # Errors
    /// I/O errors.
    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_raw(data).await
    }

    async fn write_raw(&mut self, data: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("spool file already finished"))?;
        file.write_all(data).await?;
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far (header included).
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Flushes and fsyncs the file.
    ///
    /// # Errors
    /// I/O errors; the file is removed.
    pub async fn finish(mut self) -> io::Result<Written> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("spool file already finished"))?;
        file.flush().await?;
        let file = file.into_inner();
        file.sync_all().await?;
        drop(file);
        Ok(Written {
            path: self.guard.0.clone().unwrap_or_default(),
            guard: self.guard,
            size: self.bytes,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }
}

/// A finished, fsynced temporary file, not yet committed.
#[derive(Debug)]
pub struct Written {
    /// Where it lies now.
    pub path: PathBuf,
    guard: TempGuard,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its contents, lowercase hex.
    pub sha256: String,
}

/// Used and total bytes of the file system holding `dir` (used counts what unprivileged
/// writers cannot have: total minus what is available to them).
pub fn disk_use(dir: &Path) -> Option<(u64, u64)> {
    let st = rustix::fs::statvfs(dir).ok()?;
    let total = st.f_blocks.saturating_mul(st.f_frsize);
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    Some((total.saturating_sub(free), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_paths_are_hashes_even_for_hostile_uids() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 100.0).unwrap();
        let p = spool.final_path("../../etc", "/abs/path", "..\\x\0y");
        assert!(p.starts_with(dir.path()));
        let rel = p.strip_prefix(dir.path()).unwrap();
        assert_eq!(rel.components().count(), 4);
        for c in rel.components() {
            let s = c.as_os_str().to_str().unwrap();
            assert!(
                s.trim_end_matches(".dcm")
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit()),
                "{s}"
            );
        }
    }

    #[tokio::test]
    async fn a_dropped_writer_leaves_nothing_and_a_commit_is_exactly_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 100.0).unwrap();
        let mut w = spool.create(b"head").await.unwrap();
        w.write(b"body").await.unwrap();
        drop(w);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );

        let mut w = spool.create(b"head").await.unwrap();
        w.write(b"body").await.unwrap();
        let written = w.finish().await.unwrap();
        // sha256("headbody"), computed independently with `printf headbody | sha256sum`.
        assert_eq!(
            written.sha256,
            "7b02d51000b5a185a616159dd2f9ddc53ab96db00006c10aa01be6fb044e8eef"
        );
        assert_eq!(written.size, 8);
        let dest = spool.final_path("1.2", "1.2.3", "1.2.3.4");
        assert!(!spool.commit(written, &dest).await.unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), b"headbody");
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
