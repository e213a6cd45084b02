//! The web-root target: entries are written into a staging directory on the web root's own
//! filesystem while they verify, and renamed into place only after the whole bundle checked
//! out, so no partially written or unverified file is ever visible under its final name.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::bundle::index::{EntryKind, Index, IndexEntry};
use crate::bundle::reader::EntrySink;
use crate::digest::Sha256Digest;
use crate::error::{Error, IoContext, Result};

/// Prefix of staging directories at the top of the web root.
pub const STAGING_PREFIX: &str = ".bundle-staging-";
/// Slack kept free beyond the content (receipt, variables file, directory blocks).
const SPACE_SLACK: u64 = 1 << 20;

/// What happened to one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Installed,
    AlreadyPresent,
    /// Written by the install itself (receipt, Kubespray variables), committed with the rest.
    Generated,
}

/// One entry bound for the web root.
#[derive(Debug, Clone)]
pub struct Placed {
    pub path: String,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub outcome: Outcome,
    staged: Option<PathBuf>,
}

/// Whether an entry belongs to the web root.
pub fn is_web_entry(entry: &IndexEntry) -> bool {
    matches!(entry.kind, EntryKind::File)
}

/// True when `dest` already holds exactly these bytes (idempotent re-runs skip it).
fn already_in_place(dest: &Path, entry: &IndexEntry) -> bool {
    match fs::metadata(dest) {
        Ok(m) if m.is_file() && m.len() == entry.size => File::open(dest)
            .and_then(Sha256Digest::of_reader)
            .is_ok_and(|(d, _)| d == entry.sha256),
        _ => false,
    }
}

/// Free bytes for an unprivileged writer on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Usage(format!("{}: path contains NUL", path.display())))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::io(
            "cannot check free space on",
            path,
            io::Error::last_os_error(),
        ));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Pre-flight for the web root (SPEC §4): it exists, there is room for what must be
/// written (plus slack), and it is writable. Runs after the signature checked out and
/// before any data moves; fails having written nothing.
pub fn preflight(web_root: &Path, index: &Index) -> Result<u64> {
    let meta = fs::metadata(web_root)
        .map_err(|e| Error::io("web root does not exist or cannot be read:", web_root, e))?;
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "--web-root {}: not a directory",
            web_root.display()
        )));
    }
    let needed: u64 = index
        .entries
        .iter()
        .filter(|e| is_web_entry(e))
        .filter(|e| !fs::metadata(web_root.join(&e.path)).is_ok_and(|m| m.len() == e.size))
        .map(|e| e.size)
        .sum();
    let free = free_bytes(web_root)?;
    if needed + SPACE_SLACK > free {
        return Err(Error::Runtime(format!(
            "not enough space on the web root {}: the install needs {} bytes (plus {} slack), {} are free\nhint: free space or choose another --web-root; nothing was written",
            web_root.display(),
            needed,
            SPACE_SLACK,
            free
        )));
    }
    for dir in existing_dirs_written(web_root, index) {
        if !writable(&dir) {
            return Err(Error::Runtime(format!(
                "{} is not writable\nhint: run as a user that may write the web root, and check that its filesystem is not mounted read-only; nothing was written",
                dir.display()
            )));
        }
    }
    Ok(needed)
}

/// The directories that already exist and that the commit will create entries in.
fn existing_dirs_written(web_root: &Path, index: &Index) -> Vec<PathBuf> {
    let mut dirs = std::collections::BTreeSet::new();
    dirs.insert(web_root.to_path_buf());
    dirs.insert(web_root.join(".bundle"));
    for e in index.entries.iter().filter(|e| is_web_entry(e)) {
        let mut p = web_root.join(&e.path);
        while p.pop() && p.starts_with(web_root) {
            dirs.insert(p.clone());
        }
    }
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Stages web-root entries while the bundle streams.
pub struct WebRootSink {
    web_root: PathBuf,
    staging: PathBuf,
    placed: Vec<Placed>,
    bytes_written: u64,
}

impl WebRootSink {
    /// Creates the staging directory (on the web root's filesystem, for atomic renames).
    pub fn new(web_root: &Path) -> Result<Self> {
        let staging = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(web_root)
            .map_err(|e| Error::Runtime(format!(
                "cannot write to the web root {}: {e}\nhint: check permissions and that the filesystem is mounted read-write",
                web_root.display()
            )))?
            .keep();
        Ok(WebRootSink {
            web_root: web_root.to_path_buf(),
            staging,
            placed: Vec::new(),
            bytes_written: 0,
        })
    }

    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    /// What has been staged or found in place so far.
    pub fn placed(&self) -> &[Placed] {
        &self.placed
    }

    /// Stages a file the install generates (receipt, variables) so that it is committed,
    /// or rolled back, together with the content.
    pub fn stage_generated(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        let staged = self.staging.join(self.placed.len().to_string());
        fs::write(&staged, bytes).map_err(|e| disk_error(&self.web_root, path, e))?;
        self.placed.push(Placed {
            path: path.to_string(),
            sha256: Sha256Digest::of_bytes(bytes),
            size: bytes.len() as u64,
            outcome: Outcome::Generated,
            staged: Some(staged),
        });
        Ok(())
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Renames every staged file into place (after the whole bundle verified), with the
    /// permissions a web server needs whatever the umask. If any step fails (a full disk
    /// while creating directories, say), every step already taken is undone, so the web
    /// root is left as it was.
    pub fn commit(mut self) -> Result<Vec<Placed>> {
        sync_filesystem(&self.staging);
        let mut journal = Journal::default();
        if let Err(e) = self.commit_all(&mut journal) {
            journal.undo();
            return Err(e);
        }
        sync_filesystem(&self.web_root);
        Ok(std::mem::take(&mut self.placed))
    }

    fn commit_all(&self, journal: &mut Journal) -> Result<()> {
        for (n, p) in self.placed.iter().enumerate() {
            let Some(staged) = &p.staged else { continue };
            let dest = self.web_root.join(&p.path);
            if let Some(parent) = dest.parent() {
                create_dirs_0755(&self.web_root, parent, &mut journal.created_dirs)?;
            }
            fs::set_permissions(staged, fs::Permissions::from_mode(0o644))
                .at("cannot set permissions on", staged)?;
            // Keep the file being replaced (as a hard link) so that a rollback restores it.
            let backup = self.staging.join(format!("previous-{n}"));
            let backup = fs::hard_link(&dest, &backup).ok().map(|_| backup);
            fs::rename(staged, &dest).map_err(|e| {
                Error::Runtime(format!(
                    "cannot move {} into place: {e}\nhint: the web root was left as it was; fix the cause and run install again",
                    dest.display()
                ))
            })?;
            journal.moved.push((staged.clone(), dest, backup));
        }
        Ok(())
    }
}

/// Steps of a commit, undone in reverse order when a later step fails.
#[derive(Default)]
struct Journal {
    created_dirs: Vec<PathBuf>,
    moved: Vec<(PathBuf, PathBuf, Option<PathBuf>)>,
}

impl Journal {
    fn undo(self) {
        for (staged, dest, backup) in self.moved.into_iter().rev() {
            let _ = match backup {
                Some(previous) => fs::rename(previous, &dest),
                None => fs::rename(&dest, staged),
            };
        }
        for dir in self.created_dirs.into_iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

impl Drop for WebRootSink {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.staging);
    }
}

impl EntrySink for WebRootSink {
    fn accept(&mut self, entry: &IndexEntry, data: &mut dyn Read) -> Result<()> {
        if !is_web_entry(entry) {
            return Ok(());
        }
        let dest = self.web_root.join(&entry.path);
        if already_in_place(&dest, entry) {
            self.placed.push(Placed {
                path: entry.path.clone(),
                sha256: entry.sha256,
                size: entry.size,
                outcome: Outcome::AlreadyPresent,
                staged: None,
            });
            return Ok(());
        }
        let staged = self.staging.join(self.placed.len().to_string());
        let file = File::create(&staged).map_err(|e| disk_error(&self.web_root, &entry.path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = data
                .read(&mut buf)
                .map_err(|e| Error::from_bundle_read(&entry.path, e))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(|e| disk_error(&self.web_root, &entry.path, e))?;
        }
        out.flush()
            .map_err(|e| disk_error(&self.web_root, &entry.path, e))?;
        self.bytes_written += entry.size;
        self.placed.push(Placed {
            path: entry.path.clone(),
            sha256: entry.sha256,
            size: entry.size,
            outcome: Outcome::Installed,
            staged: Some(staged),
        });
        Ok(())
    }
}

fn disk_error(web_root: &Path, what: &str, e: io::Error) -> Error {
    let hint = if e.raw_os_error() == Some(libc::ENOSPC) {
        "\nhint: the web root's filesystem is full; free space and run install again (nothing was installed)"
    } else {
        ""
    };
    Error::Runtime(format!(
        "cannot write {what} on {}: {e}{hint}",
        web_root.display()
    ))
}

/// Creates `dir` and its missing parents below `root`, each 0755 whatever the umask,
/// recording each directory it created (for rollback).
pub fn create_dirs_0755(root: &Path, dir: &Path, created: &mut Vec<PathBuf>) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && parent != root
        && parent.starts_with(root)
    {
        create_dirs_0755(root, parent, created)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            created.push(dir.to_path_buf());
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .at("cannot set permissions on", dir)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(disk_error(root, &dir.display().to_string(), e)),
    }
}

/// Flushes the filesystem holding `path` (one `syncfs` instead of an fsync per file).
fn sync_filesystem(path: &Path) {
    if let Ok(f) = File::open(path) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open file descriptor.
        unsafe {
            libc::syncfs(f.as_raw_fd());
        }
    }
}

/// Removes staging directories left by an install that was killed (called under the
/// install lock, so none of them belongs to a running install).
pub fn remove_stale_staging(web_root: &Path) {
    let Ok(dir) = fs::read_dir(web_root) else {
        return;
    };
    for entry in dir.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGING_PREFIX)
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
