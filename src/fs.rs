//! File-system primitives every destination shares: a root directory that is reached only
//! through directory handles, never through a symbolic link below it (SPEC §4 "Never
//! outside a destination"), and durable writes whose sync errors are reported (SPEC §5).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};

/// A directory opened once (its own path may be a symlink: it is resolved here, once);
/// everything below it is reached from this handle without following links.
#[derive(Clone, Debug)]
pub struct RootDir {
    path: PathBuf,
    fd: Arc<OwnedFd>,
    /// What the directory is to the operator ("web root", "OCI directory"), in messages.
    role: &'static str,
}

/// Why a path below a root cannot be used.
#[derive(Debug)]
pub enum WalkError {
    /// A component is a symbolic link, or not a directory where one is needed.
    Refused { path: String, what: &'static str },
    /// The operating system refused (a full disk, permissions, …).
    Io { path: String, source: io::Error },
}

impl WalkError {
    /// The library error, naming the path below `root` and what to do about it.
    pub fn into_error(self, root: &Path, role: &str) -> Error {
        match self {
            WalkError::Refused { path, what } => Error::Runtime(format!(
                "`{path}` below the {role} {} {what}: airgap-bundle never follows links or replaces \
                 other things below the {role}",
                root.display(),
            ))
            .with_hint(format!(
                "remove or rename `{}` and run install again; nothing was written",
                root.join(&path).display()
            )),
            WalkError::Io { path, source } => Error::Runtime(format!(
                "cannot use `{path}` below the {role} {}: {source}",
                root.display()
            ))
            .with_hint(disk_hint(&source)),
        }
    }
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Splits `a/b/c` into (`a/b`, `c`); a top-level name has the parent `""`.
pub fn split_parent(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

fn open_dir_at(parent: BorrowedFd<'_>, name: &str) -> std::result::Result<OwnedFd, Errno> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `lstat` relative to a directory handle; `None` when nothing is there.
pub fn stat_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(errno_io(e)),
    }
}

/// What is at a path, for messages and for deciding whether it may be replaced.
pub fn kind_of(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Why a non-directory (or non-file) cannot be used, for messages.
pub fn describe_blocker(ft: FileType) -> &'static str {
    match ft {
        FileType::Symlink => "is a symlink",
        FileType::Directory => "is a directory",
        FileType::RegularFile => "is not a directory",
        _ => "is a device, socket or FIFO",
    }
}

/// Opens an existing regular file without following a link at its last component, and
/// without blocking on a FIFO planted in its place (anything but a regular file is an
/// error).
pub fn open_file_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<File> {
    let file = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map(File::from)
    .map_err(errno_io)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not a regular file"),
        ));
    }
    Ok(file)
}

/// Creates a new file (never an existing one, never through a link) with `mode`, whatever
/// the umask.
pub fn create_file_at(dir: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(errno_io)?;
    rustix::fs::fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(errno_io)?;
    Ok(File::from(fd))
}

/// How a [`Move`] into place went, so that [`Move::undo`] can reverse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renamed {
    /// Nothing was at the destination.
    New,
    /// A previous file was at the destination; it now sits at the source name.
    Exchanged,
    /// A previous file was at the destination; it was moved to the aside name first (a
    /// filesystem without `RENAME_EXCHANGE`).
    Aside,
}

fn exchange_unsupported(e: Errno) -> bool {
    e == Errno::INVAL || e == Errno::NOSYS || e == Errno::OPNOTSUPP
}

/// One staged file and its destination: a step of a commit, and its undo.
pub struct Move<'a> {
    /// The staging directory and the staged file's name in it.
    pub staging: BorrowedFd<'a>,
    pub staged: &'a str,
    /// The destination directory and the file's final name in it.
    pub dir: BorrowedFd<'a>,
    pub name: &'a str,
}

impl Move<'_> {
    /// Where a replaced file waits in staging on a filesystem that cannot exchange.
    fn aside(&self) -> String {
        format!("previous-{}", self.staged)
    }

    /// Moves the staged file into place atomically. A regular file at the destination is
    /// swapped out (it ends up at the staged name, so that a rollback can swap it back byte
    /// for byte without a hard link or a copy; where the filesystem cannot exchange, it is
    /// moved aside first); anything else there is refused, also when it appears there
    /// while this runs.
    pub fn into_place(&self) -> io::Result<Renamed> {
        let (from_dir, from, to_dir, to) = (self.staging, self.staged, self.dir, self.name);
        let refuse = |st: &Stat| {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("the destination {}", describe_blocker(kind_of(st))),
            )
        };
        match stat_at(to_dir, to)? {
            None => {
                match rustix::fs::renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE)
                {
                    Ok(()) => Ok(Renamed::New),
                    // No renameat2 flags here: the destination was absent a moment ago.
                    Err(e) if exchange_unsupported(e) => {
                        rustix::fs::renameat(from_dir, from, to_dir, to).map_err(errno_io)?;
                        Ok(Renamed::New)
                    }
                    Err(e) => Err(errno_io(e)),
                }
            }
            Some(st) if kind_of(&st) == FileType::RegularFile => {
                match self.exchange() {
                    Ok(()) => {
                        // What came back must be the regular file seen above, not something
                        // swapped in meanwhile: otherwise put everything back and refuse.
                        match stat_at(from_dir, from)? {
                            Some(back) if kind_of(&back) == FileType::RegularFile => {
                                Ok(Renamed::Exchanged)
                            }
                            other => {
                                self.exchange().map_err(errno_io)?;
                                Err(other.map_or_else(
                                    || io::Error::from(io::ErrorKind::NotFound),
                                    |st| refuse(&st),
                                ))
                            }
                        }
                    }
                    Err(e) if exchange_unsupported(e) => {
                        let aside = self.aside();
                        rustix::fs::renameat(to_dir, to, from_dir, &aside).map_err(errno_io)?;
                        if let Err(e) = rustix::fs::renameat(from_dir, from, to_dir, to) {
                            let _ = rustix::fs::renameat(from_dir, &aside, to_dir, to);
                            return Err(errno_io(e));
                        }
                        Ok(Renamed::Aside)
                    }
                    Err(e) => Err(errno_io(e)),
                }
            }
            Some(st) => Err(refuse(&st)),
        }
    }

    /// Undoes [`Move::into_place`]: swaps a previous file back, or moves a new one out.
    pub fn undo(&self, how: Renamed) -> io::Result<()> {
        match how {
            Renamed::New => rustix::fs::renameat(self.dir, self.name, self.staging, self.staged),
            Renamed::Exchanged => self.exchange(),
            Renamed::Aside => rustix::fs::renameat(self.staging, self.aside(), self.dir, self.name),
        }
        .map_err(errno_io)
    }

    fn exchange(&self) -> std::result::Result<(), Errno> {
        rustix::fs::renameat_with(
            self.staging,
            self.staged,
            self.dir,
            self.name,
            RenameFlags::EXCHANGE,
        )
    }
}

/// The names in a directory, without `.` and `..`.
/// The names in a directory (without `.` and `..`), unsorted.
pub fn names_in_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<String>> {
    names_in(dir).map_err(errno_io)
}

fn names_in(dir: BorrowedFd<'_>) -> std::result::Result<Vec<String>, Errno> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(String::from_utf8_lossy(&name).into_owned());
        }
    }
    Ok(names)
}

/// What to do about a failed write below a destination: a full filesystem (or inodes run
/// out) is the common cause worth naming.
pub fn disk_hint(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::StorageFull {
        "the filesystem is full (or out of inodes); free space and run install again"
    } else {
        "check permissions and that the filesystem is mounted read-write"
    }
}

/// Removes `name` below `dir` and everything under it, never following a link (a link is
/// removed itself).
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    match stat_at(dir, name)? {
        None => Ok(()),
        Some(st) if kind_of(&st) == FileType::Directory => {
            let sub = open_dir_at(dir, name).map_err(errno_io)?;
            for child in names_in(sub.as_fd()).map_err(errno_io)? {
                remove_tree_at(sub.as_fd(), &child)?;
            }
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(errno_io)
        }
        Some(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(errno_io),
    }
}

/// Removes an empty directory below `dir`.
pub fn remove_dir_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(errno_io)
}

/// Flushes the whole filesystem holding `fd` (one `syncfs` instead of an fsync per file).
pub fn sync_filesystem(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::fs::syncfs(fd).map_err(errno_io)
}

impl RootDir {
    /// Resolves `path` once (it may itself be a symlink) and opens it.
    pub fn open(path: &Path) -> io::Result<RootDir> {
        let path = std::fs::canonicalize(path)?;
        let fd = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_io)?;
        Ok(RootDir {
            path,
            fd: Arc::new(fd),
            role: "directory",
        })
    }

    /// The same directory, named `role` in messages.
    pub fn with_role(mut self, role: &'static str) -> RootDir {
        self.role = role;
        self
    }

    /// What the directory is to the operator, for messages ("web root").
    pub fn role(&self) -> &'static str {
        self.role
    }

    /// The resolved path (for messages and for the operator).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Free bytes for an unprivileged writer on this filesystem.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let st = rustix::fs::fstatvfs(self.fd()).map_err(errno_io)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Takes an exclusive `flock` on the root without waiting. `Ok(false)` when another
    /// process holds it.
    pub fn try_lock(&self) -> io::Result<bool> {
        match rustix::fs::flock(
            self.fd(),
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::WOULDBLOCK) => Ok(false),
            Err(e) => Err(errno_io(e)),
        }
    }

    /// Takes a shared `flock` on the root without waiting (readers such as the site export
    /// may hold it together; an install's exclusive lock excludes them). `Ok(false)` when
    /// an install holds it.
    pub fn try_lock_shared(&self) -> io::Result<bool> {
        match rustix::fs::flock(self.fd(), rustix::fs::FlockOperation::NonBlockingLockShared) {
            Ok(()) => Ok(true),
            Err(Errno::WOULDBLOCK) => Ok(false),
            Err(e) => Err(errno_io(e)),
        }
    }

    /// The names in directory `rel` below the root (not following links); empty when it
    /// does not exist.
    pub fn list(&self, rel: &str) -> std::result::Result<Vec<String>, WalkError> {
        let mut cursor = DirCursor::new(self.clone());
        let Some(dir) = cursor.existing_dir(rel)? else {
            return Ok(Vec::new());
        };
        let mut names = names_in(dir).map_err(|e| WalkError::Io {
            path: rel.to_string(),
            source: errno_io(e),
        })?;
        names.sort();
        Ok(names)
    }

    /// The bytes of a small regular file below the root, or `None` when it is absent, not
    /// a regular file, reached through a link, or larger than `limit`.
    pub fn read_small(&self, rel: &str, limit: u64) -> Option<Vec<u8>> {
        use std::io::Read;
        let (parent, name) = split_parent(rel);
        let mut cursor = DirCursor::new(self.clone());
        let dir = cursor.existing_dir(parent).ok()??;
        let file = open_file_at(dir, name).ok()?;
        let mut bytes = Vec::new();
        file.take(limit + 1).read_to_end(&mut bytes).ok()?;
        (bytes.len() as u64 <= limit).then_some(bytes)
    }

    /// Opens an existing directory at the top of the root (a kept staging directory).
    pub fn open_private_dir(&self, name: &str) -> io::Result<OwnedFd> {
        open_dir_at(self.fd(), name).map_err(errno_io)
    }

    /// Creates a new directory at the top of the root (for staging), mode 0700.
    pub fn create_private_dir(&self, name: &str) -> io::Result<OwnedFd> {
        rustix::fs::mkdirat(self.fd(), name, Mode::from_bits_truncate(0o700)).map_err(errno_io)?;
        open_dir_at(self.fd(), name).map_err(errno_io)
    }
}

/// Walks directories below a [`RootDir`] one component at a time (`openat` with
/// `O_NOFOLLOW | O_DIRECTORY`), keeping the handles of the last path open so that entries
/// sorted by path cost one `openat` per new directory.
pub struct DirCursor {
    root: RootDir,
    /// The components below the root that are open, outermost first.
    stack: Vec<(String, OwnedFd)>,
}

impl DirCursor {
    pub fn new(root: RootDir) -> Self {
        DirCursor {
            root,
            stack: Vec::new(),
        }
    }

    pub fn root(&self) -> &RootDir {
        &self.root
    }

    /// The handle of directory `rel` if every component exists as a real directory,
    /// `None` if one is missing, an error if one is a link or not a directory.
    pub fn existing_dir(
        &mut self,
        rel: &str,
    ) -> std::result::Result<Option<BorrowedFd<'_>>, WalkError> {
        let complete = self.walk(rel, None)?;
        Ok(complete.then(|| self.top()))
    }

    /// The deepest existing directory on the way to `rel`, its path, and whether it is
    /// `rel` itself (pre-flight checks that one for write access).
    pub fn deepest_existing(
        &mut self,
        rel: &str,
    ) -> std::result::Result<(String, BorrowedFd<'_>, bool), WalkError> {
        let complete = self.walk(rel, None)?;
        let path = self
            .stack
            .iter()
            .map(|(c, _)| c.as_str())
            .collect::<Vec<_>>()
            .join("/");
        Ok((path, self.top(), complete))
    }

    /// The handle of directory `rel`, creating what is missing (mode 0755 whatever the
    /// umask) and recording each directory created in `created`, outermost first.
    pub fn create_dir(
        &mut self,
        rel: &str,
        created: &mut Vec<String>,
    ) -> std::result::Result<BorrowedFd<'_>, WalkError> {
        self.walk(rel, Some(created))?;
        Ok(self.top())
    }

    fn top(&self) -> BorrowedFd<'_> {
        self.stack
            .last()
            .map_or(self.root.fd(), |(_, fd)| fd.as_fd())
    }

    /// Opens the components of `rel` that are not open yet. Returns false when one is
    /// missing (and `create` is `None`).
    fn walk(
        &mut self,
        rel: &str,
        mut create: Option<&mut Vec<String>>,
    ) -> std::result::Result<bool, WalkError> {
        let components: Vec<&str> = if rel.is_empty() {
            Vec::new()
        } else {
            rel.split('/').collect()
        };
        let keep = self
            .stack
            .iter()
            .zip(&components)
            .take_while(|((open, _), want)| open == *want)
            .count();
        self.stack.truncate(keep);
        for (i, name) in components.iter().enumerate().skip(keep) {
            let sub = components[..=i].join("/");
            let parent = self.top();
            let fd = match open_dir_at(parent, name) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => match create.as_deref_mut() {
                    None => return Ok(false),
                    Some(created) => {
                        let made = match rustix::fs::mkdirat(
                            parent,
                            *name,
                            Mode::from_bits_truncate(0o755),
                        ) {
                            Ok(()) => true,
                            Err(Errno::EXIST) => false,
                            Err(e) => {
                                return Err(WalkError::Io {
                                    path: sub,
                                    source: errno_io(e),
                                });
                            }
                        };
                        if made {
                            created.push(sub.clone());
                        }
                        let fd = open_dir_at(parent, name)
                            .map_err(|e| refusal_or_io(parent, name, &sub, e))?;
                        if made {
                            rustix::fs::fchmod(&fd, Mode::from_bits_truncate(0o755)).map_err(
                                |e| WalkError::Io {
                                    path: sub.clone(),
                                    source: errno_io(e),
                                },
                            )?;
                        }
                        fd
                    }
                },
                Err(e) => return Err(refusal_or_io(parent, name, &sub, e)),
            };
            self.stack.push((name.to_string(), fd));
        }
        Ok(true)
    }
}

fn refusal_or_io(parent: BorrowedFd<'_>, name: &str, sub: &str, e: Errno) -> WalkError {
    if e == Errno::LOOP || e == Errno::NOTDIR {
        let what = stat_at(parent, name)
            .ok()
            .flatten()
            .map_or("is not a directory", |st| describe_blocker(kind_of(&st)));
        WalkError::Refused {
            path: sub.to_string(),
            what,
        }
    } else {
        WalkError::Io {
            path: sub.to_string(),
            source: errno_io(e),
        }
    }
}

/// Writes a small file via a temporary name, sync and rename, then syncs the directory,
/// so that it is never seen half-written (nor with the wrong permissions) and survives a
/// power cut once this returns.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .at("cannot create a temporary file in", dir)?;
    tmp.write_all(bytes).at("cannot write", path)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .at("cannot set permissions on", tmp.path())?;
    tmp.as_file().sync_all().at("cannot sync", path)?;
    tmp.persist(path)
        .map_err(|e| Error::io("cannot rename into place", path, e.error))?;
    sync_dir(dir)
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes the names in `dir` durable (after a create, rename or unlink in it).
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("cannot sync directory", dir)
}

/// The last component of `path` as text, for temporary names derived from it.
pub fn file_name_of(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n: &OsStr| String::from_utf8_lossy(n.as_bytes()).into_owned())
        .ok_or_else(|| Error::Usage(format!("{}: not a file name", path.display())))
}
