//! The web-root target: entries are written into a staging directory on the web root's own
//! filesystem while they verify, and renamed into place only after the whole bundle checked
//! out, so no partially written or unverified file is ever visible under its final name.
//! Every path below the web root is reached from directory handles without following links
//! ([`crate::fs::DirCursor`]), so nothing is created, replaced or removed outside it.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::FileType;

use crate::bundle::index::{EntryKind, Index, IndexEntry};
use crate::bundle::reader::{EntryReader, EntrySink};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::fs::{
    DirCursor, Move, Renamed, RootDir, WalkError, create_file_at, describe_blocker, disk_hint,
    kind_of, open_file_at, remove_tree_at, split_parent, stat_at, sync_filesystem,
};

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
    /// Its name in the staging directory, until the commit.
    staged: Option<String>,
}

/// A directory tree an install writes into with staging and an all-or-nothing commit:
/// which entries it takes, and where they go below its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The web root: `files/…`, `debs/<repo>/…`, `charts/…`, `python/…`, by entry path.
    WebRoot,
    /// `--oci-dir`: the bundle's OCI image layout without its `oci/` prefix. Its
    /// `index.json` is generated (merged with the one already there), not copied.
    OciDir,
}

/// The OCI layout's own index in a bundle.
pub const OCI_INDEX_PATH: &str = "oci/index.json";

impl Layout {
    /// What the tree is to the operator, in messages.
    pub fn role(self) -> &'static str {
        match self {
            Layout::WebRoot => "web root",
            Layout::OciDir => "OCI directory",
        }
    }

    /// Where `entry` goes below this tree's root, if it goes there at all.
    pub fn dest(self, entry: &IndexEntry) -> Option<&str> {
        match self {
            Layout::WebRoot => matches!(
                entry.kind,
                EntryKind::File
                    | EntryKind::Deb
                    | EntryKind::AptIndex
                    | EntryKind::Chart
                    | EntryKind::Python
            )
            .then_some(entry.path.as_str()),
            Layout::OciDir if entry.kind.is_oci() && entry.path != OCI_INDEX_PATH => {
                entry.path.strip_prefix("oci/")
            }
            Layout::OciDir => None,
        }
    }
}

/// Whether an entry belongs to the web root.
pub fn is_web_entry(entry: &IndexEntry) -> bool {
    Layout::WebRoot.dest(entry).is_some()
}

fn walk_error(root: &RootDir, e: WalkError) -> Error {
    e.into_error(root.path(), root.role())
}

fn refused(root: &RootDir, path: &str, what: &'static str) -> Error {
    walk_error(
        root,
        WalkError::Refused {
            path: path.to_string(),
            what,
        },
    )
}

/// Opens the web root (or the OCI directory) for an install: resolves the path once (it
/// may be a symlink) and checks that it is a directory.
pub fn open(web_root: &Path, layout: Layout) -> Result<RootDir> {
    let flag = match layout {
        Layout::WebRoot => "--web-root",
        Layout::OciDir => "--oci-dir",
    };
    match std::fs::metadata(web_root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "{flag} {}: no such directory",
                web_root.display()
            ))
            .with_hint(
                "create it, or point at the web server's document root (e.g. /var/www/html)",
            ));
        }
        Ok(m) if !m.is_dir() => {
            return Err(Error::Usage(format!(
                "{flag} {}: not a directory",
                web_root.display()
            )));
        }
        _ => {}
    }
    RootDir::open(web_root)
        .map(|r| r.with_role(layout.role()))
        .map_err(|e| Error::io("cannot open", web_root, e))
}

/// What pre-flight found: the bytes the install will write, and the destinations that
/// already hold exactly the signed bytes (hashed once, here, and skipped while streaming).
#[derive(Debug, Default)]
pub struct Preflight {
    pub needed: u64,
    pub in_place: HashSet<String>,
}

/// Pre-flight for the web root (SPEC §4): nothing in the way of any destination (no
/// symlink, no non-directory below the web root), room for what must be written (plus
/// slack), and write access where directories will gain entries. Runs after the signature
/// checked out and before any data moves; fails having written nothing. `generated` are the
/// files the install writes itself (receipt, variables).
pub fn preflight(
    root: &RootDir,
    index: &Index,
    layout: Layout,
    generated: &[&str],
    staging: &Staging,
) -> Result<Preflight> {
    let mut cursor = DirCursor::new(root.clone());
    let mut found = Preflight::default();
    let mut checked_writable: HashSet<String> = HashSet::new();
    let web = index
        .entries
        .iter()
        .filter_map(|e| Some((layout.dest(e)?, Some((e.size, e.sha256)))));
    let generated = generated.iter().map(|p| (*p, None));
    // Files of the signed size, opened here (without following links) and hashed on
    // every core a batch at a time: few descriptors open, and a site that holds most of
    // a bundle (a re-install, a delta) is checked at the disk's speed.
    let mut candidates: Vec<(&str, std::fs::File, Sha256Digest)> = Vec::new();
    let mut signed_sizes: Vec<(&str, u64)> = Vec::new();
    for (path, signed) in web.chain(generated) {
        if let Some((size, _)) = signed {
            signed_sizes.push((path, size));
        }
        if candidates.len() >= HASH_BATCH {
            hash_candidates(&mut candidates, &mut found.in_place);
        }
        let (parent, name) = split_parent(path);
        let (deepest, dir, complete) = cursor
            .deepest_existing(parent)
            .map_err(|e| walk_error(root, e))?;
        if complete {
            match stat_at(dir, name).map_err(|e| walk_error_io(path, e, root))? {
                Some(st) if kind_of(&st) != FileType::RegularFile => {
                    return Err(refused(root, path, describe_blocker(kind_of(&st))));
                }
                Some(st) => {
                    if let Some((size, sha256)) = signed
                        && st.st_size as u64 == size
                        && let Ok(file) = open_file_at(dir, name)
                    {
                        candidates.push((path, file, sha256));
                    }
                }
                None => {}
            }
        }
        if checked_writable.insert(deepest.clone()) && !writable(dir) {
            let shown = if deepest.is_empty() {
                root.path().to_path_buf()
            } else {
                root.path().join(&deepest)
            };
            return Err(Error::Runtime(format!("{} is not writable", shown.display())).with_hint(
                "run as a user that may write there, and check that its filesystem is not mounted read-only; nothing was written",
            ));
        }
    }
    hash_candidates(&mut candidates, &mut found.in_place);
    // What is in place, or kept staged by an earlier run of this bundle (its room already
    // taken), needs no room.
    for (path, size) in signed_sizes {
        if !found.in_place.contains(path) && !staging.kept.contains_key(path) {
            found.needed = found.needed.saturating_add(size);
        }
    }
    // The receipt lists every file (path, sha256, size, status: well under 256 bytes each
    // plus the path) and the variables file is small.
    let generated_bytes: u64 = index
        .entries
        .iter()
        .filter(|e| layout.dest(e).is_some())
        .map(|e| 256 + e.path.len() as u64)
        .sum::<u64>()
        + (64 << 10);
    let extra = generated_bytes.saturating_add(SPACE_SLACK);
    let free = root
        .free_bytes()
        .map_err(|e| Error::io("cannot check free space on", root.path(), e))?;
    if found.needed.saturating_add(extra) > free {
        return Err(Error::Runtime(format!(
            "not enough space on the {} {}: the install needs {} bytes (plus {extra} for the receipt, the variables and slack), {free} are free",
            root.role(),
            root.path().display(),
            found.needed,
        ))
        .with_hint("free space or choose another --web-root; nothing was written"));
    }
    Ok(found)
}

/// Files pre-flight hashes at once (each batch holds its files open).
const HASH_BATCH: usize = 256;

/// Hashes the opened candidates on every core; those that match their signed sha256 are
/// in place. Empties `candidates`.
fn hash_candidates(
    candidates: &mut Vec<(&str, std::fs::File, Sha256Digest)>,
    in_place: &mut HashSet<String>,
) {
    let matched = crate::bundle::pool::map_on_every_core(candidates, |(_, file, sha256)| {
        Sha256Digest::of_reader(file).is_ok_and(|(d, _)| d == *sha256)
    });
    for ((path, _, _), matched) in candidates.drain(..).zip(matched) {
        if matched {
            in_place.insert(path.to_string());
        }
    }
}

/// The entries a delta left out that `found` does not hold in place (for `layout`).
pub fn missing_in_place<'a>(
    index: &'a Index,
    layout: Layout,
    found: &Preflight,
) -> impl Iterator<Item = &'a str> {
    index.entries.iter().filter_map(move |e| {
        let dest = layout.dest(e)?;
        (e.in_place && !found.in_place.contains(dest)).then_some(e.path.as_str())
    })
}

fn walk_error_io(path: &str, source: io::Error, root: &RootDir) -> Error {
    walk_error(
        root,
        WalkError::Io {
            path: path.to_string(),
            source,
        },
    )
}

fn writable(dir: std::os::fd::BorrowedFd<'_>) -> bool {
    rustix::fs::accessat(
        dir,
        ".",
        rustix::fs::Access::WRITE_OK,
        rustix::fs::AtFlags::empty(),
    )
    .is_ok()
}

/// The staging directory of one bundle (named after its signed index's digest) and the
/// entries an earlier install of the same bundle verified into it before it stopped early
/// (a missing volume, a pulled stick, a kill): SPEC §4 keeps them for the next install of
/// the same bundle to reuse, and nothing else.
pub struct Staging {
    root: RootDir,
    name: String,
    fd: OwnedFd,
    /// Destination → staged name (`c<position>`) of the entries kept verified.
    kept: HashMap<String, String>,
    /// On drop, keep the verified entries (`c<N>`) instead of removing the directory.
    keep_verified: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep_verified {
            let _ = remove_tree_at(self.root.fd(), &self.name);
            return;
        }
        // Only complete, verified entries stay (`c<N>`): partial and generated files go.
        if let Ok(names) = crate::fs::names_in_dir(self.fd.as_fd()) {
            for name in names
                .iter()
                .filter(|n| n.ends_with(".part") || n.starts_with('g'))
            {
                let _ = remove_tree_at(self.fd.as_fd(), name);
            }
        }
    }
}

impl Staging {
    /// Opens (or creates) the staging directory of the bundle whose signed index hashes to
    /// `index_sha256`, after removing every other bundle's. Only a directory this user owns
    /// and nobody else may enter is trusted to hold verified entries: anything else at that
    /// name is removed first. Kept entries are the complete files `c<N>` (never `.part`)
    /// that still hash to entry N's signed sha256 and size; everything else in it is removed.
    pub fn open(
        root: &RootDir,
        layout: Layout,
        index: &Index,
        index_sha256: &Sha256Digest,
    ) -> Result<Staging> {
        let name = format!("{STAGING_PREFIX}{}", &index_sha256.hex()[..16]);
        // A delta may yet be refused for what is not in place (SPEC §3: before any data
        // moves): other bundles' staging goes only once it is not
        // ([`WebRootSink::remove_other_staging`]).
        if index.base.is_none() {
            remove_stale_staging(root, Some(&name));
        }
        let cannot = |e: io::Error| {
            Error::Runtime(format!(
                "the {} {} is not writable: {e}",
                root.role(),
                root.path().display()
            ))
            .with_hint(
                "run as a user that may write there, and check that its filesystem is not mounted read-only; nothing was written",
            )
        };
        // Judged on the opened handle (fstat), so nothing can be swapped in between.
        let euid = rustix::process::geteuid().as_raw();
        let trusted = |fd: &OwnedFd| {
            rustix::fs::fstat(fd).is_ok_and(|st| st.st_uid == euid && st.st_mode & 0o077 == 0)
        };
        let fd = match root.open_private_dir(&name) {
            Ok(fd) if trusted(&fd) => fd,
            _ => {
                remove_tree_at(root.fd(), &name).map_err(cannot)?;
                let fd = root.create_private_dir(&name).map_err(cannot)?;
                if !trusted(&fd) {
                    return Err(cannot(io::Error::other(format!(
                        "{name} was replaced while it was being created"
                    ))));
                }
                fd
            }
        };
        let names = crate::fs::names_in_dir(fd.as_fd()).map_err(cannot)?;
        // `c<N>` names a kept entry N bound for this layout; anything else goes.
        let candidates: Vec<(String, &str, &IndexEntry)> = names
            .into_iter()
            .filter_map(|staged| {
                let entry = staged
                    .strip_prefix('c')
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| staged == format!("c{n}"))
                    .and_then(|n| index.entries.get(n));
                let dest = entry.and_then(|e| layout.dest(e));
                match (entry, dest) {
                    (Some(entry), Some(dest)) => Some((staged, dest, entry)),
                    _ => {
                        let _ = remove_tree_at(fd.as_fd(), &staged);
                        None
                    }
                }
            })
            .collect();
        // Hashed again before reuse, on every core: a file is renamed to `c<N>` without an
        // fsync, so after a power loss (or on a failing disk) a file of the right size may
        // not hold the bytes that verified; the size alone would let them through to a
        // final name. Reading the local disk is still far cheaper than the stick.
        let good = crate::bundle::pool::map_on_every_core(&candidates, |(staged, _, entry)| {
            open_file_at(fd.as_fd(), staged).is_ok_and(|f| {
                f.metadata().is_ok_and(|m| m.len() == entry.size)
                    && Sha256Digest::of_reader(f)
                        .is_ok_and(|(d, n)| d == entry.sha256 && n == entry.size)
            })
        });
        let mut kept = HashMap::new();
        for ((staged, dest, _), good) in candidates.into_iter().zip(good) {
            if good {
                kept.insert(dest.to_string(), staged);
            } else {
                remove_tree_at(fd.as_fd(), &staged).map_err(cannot)?;
            }
        }
        // Until an install takes it over, what an earlier run kept stays (a pre-flight
        // failure does not throw it away); a new, empty directory goes.
        let keep_verified = !kept.is_empty();
        Ok(Staging {
            root: root.clone(),
            name,
            fd,
            kept,
            keep_verified,
        })
    }
}

/// Stages web-root entries while the bundle streams.
pub struct WebRootSink {
    layout: Layout,
    root: RootDir,
    cursor: DirCursor,
    /// Destinations pre-flight found holding the signed bytes already.
    in_place: HashSet<String>,
    staging: Staging,
    /// Signed-index position of each entry bound here (names its staged file).
    positions: HashMap<String, usize>,
    placed: Vec<Placed>,
    bytes_written: u64,
    /// Entries (and their bytes) taken from the kept staging instead of written again.
    reused: (usize, u64),
}

impl WebRootSink {
    pub fn new(
        root: &RootDir,
        layout: Layout,
        in_place: HashSet<String>,
        index: &Index,
        staging: Staging,
    ) -> Result<Self> {
        let positions = index
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((layout.dest(e)?.to_string(), i)))
            .collect();
        Ok(WebRootSink {
            layout,
            root: root.clone(),
            cursor: DirCursor::new(root.clone()),
            in_place,
            staging,
            positions,
            placed: Vec::new(),
            bytes_written: 0,
            reused: (0, 0),
        })
    }

    /// Entries and bytes reused from an earlier install that stopped early.
    pub fn reused(&self) -> (usize, u64) {
        self.reused
    }

    /// The install stopped early: keep what verified for the next run of this bundle.
    pub fn keep_verified(&mut self) {
        self.staging.keep_verified = true;
    }

    /// Pre-flight passed, the read starts: every other bundle's staging directory goes (a
    /// delta keeps them until then), and from here on only an interruption keeps what is
    /// staged. Until then a refusal (a delta's missing entries, a registry that does not
    /// answer) leaves an earlier run's kept entries for the next run.
    pub fn take_over(&mut self) {
        remove_stale_staging(&self.root, Some(&self.staging.name));
        self.staging.keep_verified = false;
    }

    /// What has been staged or found in place so far.
    pub fn placed(&self) -> &[Placed] {
        &self.placed
    }

    /// The bytes of the entry accepted last, verified (its staged copy, or the file found
    /// in place), for a second target that wants the same bytes.
    pub fn reopen_last(&mut self) -> Result<Option<std::fs::File>> {
        let Some(last) = self.placed.last() else {
            return Ok(None);
        };
        let opened = match &last.staged {
            Some(staged) => open_file_at(self.staging.fd.as_fd(), staged),
            None => {
                let (parent, name) = split_parent(&last.path);
                match self
                    .cursor
                    .existing_dir(parent)
                    .map_err(|e| walk_error(&self.root, e))?
                {
                    Some(dir) => open_file_at(dir, name),
                    None => Err(io::Error::from(io::ErrorKind::NotFound)),
                }
            }
        };
        opened
            .map(Some)
            .map_err(|e| Error::io("cannot read back", self.root.path().join(&last.path), e))
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    fn new_staged_file(&self, name: &str, what: &str) -> Result<BufWriter<std::fs::File>> {
        let file = create_file_at(self.staging.fd.as_fd(), name, 0o644)
            .map_err(|e| disk_error(&self.root, what, e))?;
        Ok(BufWriter::with_capacity(1 << 20, file))
    }

    /// Stages a file the install generates (receipt, variables) so that it is committed,
    /// or rolled back, together with the content.
    pub fn stage_generated(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        let staged = format!("g{}", self.placed.len());
        let mut out = self.new_staged_file(&staged, path)?;
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(|e| disk_error(&self.root, path, e))?;
        self.placed.push(Placed {
            path: path.to_string(),
            sha256: Sha256Digest::of_bytes(bytes),
            size: bytes.len() as u64,
            outcome: Outcome::Generated,
            staged: Some(staged),
        });
        Ok(())
    }

    /// Renames every staged file into place (after the whole bundle verified). If any
    /// step fails (a full disk while creating directories, a failed sync, say), every step
    /// already taken is undone, so the web root is left as it was: files it replaced are
    /// swapped back byte for byte, directories it created are removed.
    pub fn commit(mut self) -> Result<Vec<Placed>> {
        sync_filesystem(self.staging.fd.as_fd())
            .map_err(|e| sync_error(&self.root, "the staged files", e))?;
        let mut journal = Journal::default();
        let outcome = self.commit_all(&mut journal).and_then(|()| {
            sync_filesystem(self.root.fd())
                .map_err(|e| sync_error(&self.root, "the installed files", e))
        });
        if let Err(e) = outcome {
            let failed = journal.undo(&self.root, self.staging.fd.as_fd());
            return Err(with_rollback_report(e, &failed));
        }
        Ok(std::mem::take(&mut self.placed))
    }

    fn commit_all(&mut self, journal: &mut Journal) -> Result<()> {
        for p in &self.placed {
            let Some(staged) = &p.staged else { continue };
            let (parent, name) = split_parent(&p.path);
            let dir = self
                .cursor
                .create_dir(parent, &mut journal.created_dirs)
                .map_err(|e| walk_error(&self.root, e))?;
            let step = Move {
                staging: self.staging.fd.as_fd(),
                staged,
                dir,
                name,
            };
            let how = step.into_place().map_err(|e| {
                Error::Runtime(format!(
                    "cannot move {} into place: {e}",
                    self.root.path().join(&p.path).display()
                ))
                .with_hint(format!(
                    "the {} was left as it was; {}",
                    self.root.role(),
                    disk_hint(&e)
                ))
            })?;
            journal.moved.push((staged.clone(), p.path.clone(), how));
        }
        Ok(())
    }
}

/// Steps of a commit, undone in reverse order when a later step fails.
#[derive(Default)]
struct Journal {
    /// Directories the commit created, below the web root, outermost first.
    created_dirs: Vec<String>,
    /// (staged name, destination, how it was renamed).
    moved: Vec<(String, String, Renamed)>,
}

impl Journal {
    /// Undoes every step; returns what could not be restored.
    fn undo(self, root: &RootDir, staging: std::os::fd::BorrowedFd<'_>) -> Vec<String> {
        let mut failed = Vec::new();
        let mut cursor = DirCursor::new(root.clone());
        for (staged, dest, how) in self.moved.into_iter().rev() {
            let (parent, name) = split_parent(&dest);
            let result = match cursor.existing_dir(parent) {
                Ok(Some(dir)) => Move {
                    staging,
                    staged: &staged,
                    dir,
                    name,
                }
                .undo(how),
                Ok(None) => Err(io::Error::from(io::ErrorKind::NotFound)),
                Err(e) => Err(io::Error::other(format!("{e:?}"))),
            };
            if let Err(e) = result {
                failed.push(format!("{dest}: {e}"));
            }
        }
        let mut cursor = DirCursor::new(root.clone());
        for dir in self.created_dirs.into_iter().rev() {
            let (parent, name) = split_parent(&dir);
            let result = match cursor.existing_dir(parent) {
                Ok(Some(fd)) => crate::fs::remove_dir_at(fd, name),
                Ok(None) => Ok(()),
                Err(e) => Err(io::Error::other(format!("{e:?}"))),
            };
            if let Err(e) = result {
                failed.push(format!("{dir}/: {e}"));
            }
        }
        failed
    }
}

/// Adds what a rollback could not restore to the error that caused it.
fn with_rollback_report(e: Error, failed: &[String]) -> Error {
    if failed.is_empty() {
        return e;
    }
    let report = format!("the rollback could not restore: {}", failed.join("; "));
    e.map_message(|m| format!("{m}\n{report}"))
        .with_hint("check these paths by hand before running install again")
}

impl WebRootSink {
    /// Records `entry` as found in place, or as staged by an earlier run; `None` when it
    /// is neither.
    fn take_held(&mut self, entry: &IndexEntry, dest: &str) -> Option<()> {
        let (outcome, staged) = if self.in_place.contains(dest) {
            (Outcome::AlreadyPresent, None)
        } else {
            let staged = self.staging.kept.get(dest)?.clone();
            self.reused.0 += 1;
            self.reused.1 += entry.size;
            (Outcome::Installed, Some(staged))
        };
        self.placed.push(Placed {
            path: dest.to_string(),
            sha256: entry.sha256,
            size: entry.size,
            outcome,
            staged,
        });
        Some(())
    }
}

impl EntrySink for WebRootSink {
    fn accept(&mut self, entry: &IndexEntry, data: &mut EntryReader<'_>) -> Result<()> {
        let Some(dest) = self.layout.dest(entry) else {
            return Ok(());
        };
        // Held entries still stream past (the reader verifies them); nothing is written.
        if self.take_held(entry, dest).is_some() {
            return Ok(());
        }
        let position = self.positions.get(dest).copied().unwrap_or(usize::MAX);
        let staged = format!("c{position}");
        let partial = format!("{staged}.part");
        let mut out = self.new_staged_file(&partial, dest)?;
        data.copy_to(&mut out, |e| disk_error(&self.root, dest, e))?;
        out.flush().map_err(|e| disk_error(&self.root, dest, e))?;
        // Verified (the copy ends only at the signed sha256): under its kept name now.
        rustix::fs::renameat(
            self.staging.fd.as_fd(),
            partial.as_str(),
            self.staging.fd.as_fd(),
            staged.as_str(),
        )
        .map_err(|e| disk_error(&self.root, dest, e.into()))?;
        self.bytes_written += entry.size;
        self.placed.push(Placed {
            path: dest.to_string(),
            sha256: entry.sha256,
            size: entry.size,
            outcome: Outcome::Installed,
            staged: Some(staged),
        });
        Ok(())
    }

    fn holds(&self, entry: &IndexEntry) -> bool {
        self.layout
            .dest(entry)
            .is_some_and(|d| self.in_place.contains(d) || self.staging.kept.contains_key(d))
    }

    fn skipped(&mut self, entry: &IndexEntry) -> Result<()> {
        if let Some(dest) = self.layout.dest(entry) {
            self.take_held(entry, dest);
        }
        Ok(())
    }
}

/// A failed `syncfs`: the data may not be on the disk, so the install did not happen.
fn sync_error(root: &RootDir, what: &str, e: io::Error) -> Error {
    Error::Runtime(format!(
        "cannot sync {what} on the {} {}: {e}",
        root.role(),
        root.path().display()
    ))
    .with_hint(
        "the filesystem could not write the data out (a failing or full disk: check `dmesg`); \
         nothing was installed under a final name, and the next install removes what was staged",
    )
}

fn disk_error(root: &RootDir, what: &str, e: io::Error) -> Error {
    let error = Error::Runtime(format!(
        "cannot write {what} on {}: {e}",
        root.path().display()
    ));
    if e.kind() == io::ErrorKind::StorageFull {
        error.with_hint(format!(
            "the {}'s filesystem is full; free space and run install again (nothing was installed)",
            root.role()
        ))
    } else {
        error
    }
}

/// Removes staging directories left by earlier installs (called under the install lock,
/// so none of them belongs to a running install), except `keep`.
pub fn remove_stale_staging(root: &RootDir, keep: Option<&str>) {
    let Ok(names) = root.list("") else { return };
    for name in names
        .iter()
        .filter(|n| n.starts_with(STAGING_PREFIX) && Some(n.as_str()) != keep)
    {
        let _ = remove_tree_at(root.fd(), name);
    }
}

/// A file the install regenerates by merging into what earlier installs left (a Helm
/// index, a simple-repository page): `None` when there is none; an error (exit 1, naming
/// it, with a hint) when one is there that cannot be read in full within `limit` bytes,
/// since merging part of it, or none, would drop what earlier installs listed. `what`
/// names the file in the error ("a Helm index"), `rebuilt_from` what replaces it ("this
/// bundle's charts").
pub fn existing_generated(
    root: &RootDir,
    rel: &str,
    limit: u64,
    what: &str,
    rebuilt_from: &str,
) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let shown = root.path().join(rel);
    let (parent, name) = split_parent(rel);
    let mut cursor = DirCursor::new(root.clone());
    let Some(dir) = cursor
        .existing_dir(parent)
        .map_err(|e| walk_error(root, e))?
    else {
        return Ok(None);
    };
    let file = match open_file_at(dir, name) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read", shown, e)),
    };
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("cannot read", shown.clone(), e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::Runtime(format!(
            "{}: larger than the {limit} bytes {what} this install merges into may have",
            shown.display()
        ))
        .with_hint(format!(
            "move it away (the install rebuilds it from {rebuilt_from}), then install again; nothing was installed"
        )));
    }
    Ok(Some(bytes))
}
