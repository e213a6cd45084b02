//! Shared support for the integration tests: run the real `bundle` binary,
//! temp workspaces, tree snapshots, and a private Apache on 127.0.0.1.
//!
//! Every test file includes this with `mod common;`. Not every file uses
//! every helper, hence the `dead_code` allowances.
//!
//! Tests run against real components. When one is missing the test fails
//! (see [`require_tool`]); it never silently skips.

#![allow(dead_code)]

pub mod apt;
pub mod delta;
pub mod helm;
pub mod install;
pub mod net;
pub mod pypi;
pub mod registry;
pub mod site;
pub mod tamper;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Path of the `bundle` binary built by cargo for this test run.
pub fn bundle_bin() -> &'static str {
    env!("CARGO_BIN_EXE_bundle")
}

// ---------------------------------------------------------------------------
// Workspace
// ---------------------------------------------------------------------------

/// A temporary directory, removed on drop. Mode 0755 so that Apache's worker
/// processes (running as `nobody`) can read what a test serves from it.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::Builder::new()
            .prefix("airgap-bundle-test-")
            .tempdir_in(std::env::temp_dir())
            .expect("create temp workspace");
        set_mode(dir.path(), 0o755);
        Workspace { dir }
    }

    /// `rel` resolved inside the workspace (not created).
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `bytes` to `rel` (creating parent directories) and returns its path.
    pub fn write(&self, rel: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        write_file(&p, bytes);
        p
    }

    /// Creates directory `rel` (and parents) with mode 0755 and returns its path.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        set_mode(&p, 0o755);
        p
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Workspace::new()
    }
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------
// Deterministic randomness (no extra crates)
// ---------------------------------------------------------------------------

/// xorshift64*: deterministic, seeded, good enough to pick positions and bytes. The state
/// is public so that a test can start from a raw state instead of a mixed seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// A byte other than zero (an XOR mask that always changes the byte).
    pub fn nonzero_byte(&mut self) -> u8 {
        (self.next() % 255) as u8 + 1
    }
    /// `n` bytes, the low byte of one output each.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// `len` incompressible bytes, all 8 bytes of each output (little-endian), so that
    /// hundreds of MiB take well under a second even in a debug build.
    pub fn fill(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        for chunk in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        out
    }
}

/// Incompressible deterministic bytes (xorshift64*), different for every `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).fill(len)
}

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// Outcome of one run of `bundle`.
#[derive(Debug, Clone)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn dump(&self) -> String {
        format!(
            "exit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.code, self.stdout, self.stderr
        )
    }

    /// A panic is always a test failure, whatever the exit code.
    fn assert_no_panic(&self) {
        if self.stderr.contains("panicked") || self.stderr.contains("RUST_BACKTRACE") {
            panic!("bundle panicked\n{}", self.dump());
        }
    }

    /// Exit code 0 and no panic.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        self.assert_no_panic();
        if self.code != 0 {
            panic!("bundle failed, expected exit code 0\n{}", self.dump());
        }
        self
    }

    /// Exit code `code` and no panic.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        self.assert_no_panic();
        if self.code != code {
            panic!("expected exit code {code}\n{}", self.dump());
        }
        self
    }

    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        if !self.stderr.contains(needle) {
            panic!("stderr does not contain {needle:?}\n{}", self.dump());
        }
        self
    }

    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        if !self.stdout.contains(needle) {
            panic!("stdout does not contain {needle:?}\n{}", self.dump());
        }
        self
    }
}

/// Runs `bundle args...` with stdin closed and `NO_COLOR=1` plus `envs`,
/// in the current directory. Panics if the process was killed by a signal.
pub fn run_bundle<S: AsRef<OsStr>>(args: &[S], envs: &[(&str, &str)]) -> Run {
    run_bundle_impl(None, args, envs)
}

/// `bundle lock MANIFEST -o LOCK --cache CACHE`, which must succeed.
#[track_caller]
pub fn lock_into_cache(manifest: &Path, lock: &Path, cache: &Path) {
    run_bundle(
        &[
            "lock".as_ref(),
            manifest.as_os_str(),
            "-o".as_ref(),
            lock.as_os_str(),
            "--cache".as_ref(),
            cache.as_os_str(),
        ],
        &[],
    )
    .assert_ok();
}

/// `bundle create LOCK -o OUT --key KEY --cache CACHE extra…` with `envs`.
pub fn create_from_cache(
    lock: &Path,
    out: &Path,
    key: &Path,
    cache: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> Run {
    run_bundle(&create_args(lock, out, key, cache, extra), envs)
}

/// The arguments `create LOCK -o OUT --key KEY --cache CACHE extra…`.
pub fn create_args<'a>(
    lock: &'a Path,
    out: &'a Path,
    key: &'a Path,
    cache: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a OsStr> {
    let mut args: Vec<&OsStr> = vec![
        "create".as_ref(),
        lock.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--cache".as_ref(),
        cache.as_os_str(),
    ];
    args.extend(extra.iter().map(|a| OsStr::new(*a)));
    args
}

/// Like [`run_bundle`] but with working directory `cwd`.
pub fn run_bundle_in<S: AsRef<OsStr>>(cwd: &Path, args: &[S], envs: &[(&str, &str)]) -> Run {
    run_bundle_impl(Some(cwd), args, envs)
}

fn run_bundle_impl<S: AsRef<OsStr>>(cwd: Option<&Path>, args: &[S], envs: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bundle_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {} {shown:?}: {e}", bundle_bin()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.code() {
        Some(code) => Run {
            code,
            stdout,
            stderr,
        },
        None => panic!(
            "bundle {shown:?} was killed by signal {:?}{}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            out.status.signal(),
            if out.status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            },
        ),
    }
}

/// A run of `bundle` under a deadline: `run` is `None` when it had to be killed.
pub struct Deadlined {
    pub run: Option<Run>,
    pub elapsed: Duration,
    /// What it wrote to stderr (also when it was killed).
    pub stderr: String,
}

/// Runs `bundle args...` in `cwd` (stdin closed, `NO_COLOR=1` plus `envs`, output kept in
/// `cwd/deadline.{stdout,stderr}`), killing it by its own handle if it has not finished
/// within `deadline`.
pub fn run_bundle_with_deadline<S: AsRef<OsStr>>(
    cwd: &Path,
    args: &[S],
    envs: &[(&str, &str)],
    deadline: Duration,
) -> Deadlined {
    let out = cwd.join("deadline.stdout");
    let err = cwd.join("deadline.stderr");
    let mut cmd = Command::new(bundle_bin());
    cmd.args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).expect("create deadline.stdout"))
        .stderr(fs::File::create(&err).expect("create deadline.stderr"));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn bundle");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if start.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    let stdout = fs::read_to_string(&out).unwrap_or_default();
    let stderr = fs::read_to_string(&err).unwrap_or_default();
    Deadlined {
        run: status.map(|s| Run {
            code: s.code().unwrap_or(-1),
            stdout,
            stderr: stderr.clone(),
        }),
        elapsed,
        stderr,
    }
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// `bundle keygen --out PREFIX --no-password`; returns (`PREFIX.key`, `PREFIX.pub`).
pub fn keygen(prefix: &Path) -> (PathBuf, PathBuf) {
    run_bundle(
        &[
            OsStr::new("keygen"),
            OsStr::new("--out"),
            prefix.as_os_str(),
            OsStr::new("--no-password"),
        ],
        &[],
    )
    .assert_ok();
    (
        PathBuf::from(format!("{}.key", prefix.display())),
        PathBuf::from(format!("{}.pub", prefix.display())),
    )
}

/// SHA-256 of a file's contents, lowercase hex, read in chunks.
pub fn sha256_file(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("read {}: {e}", path.display()),
        }
    }
    hex::encode(hasher.finalize())
}

/// SHA-256 of a byte slice, lowercase hex.
pub fn sha256_bytes(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(Sha256::digest(bytes.as_ref()))
}

/// Writes `bytes` to `path`, creating parent directories.
pub fn write_file(path: impl AsRef<Path>, bytes: impl AsRef<[u8]>) {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Every path below `dir` (relative, `/`-separated, the root itself excluded)
/// mapped to a description: `"<sha256> <mode>"` for files (mode in octal,
/// permission bits only), `"dir"` for directories, `"link -> <target>"` for
/// symlinks (not followed), `"other <mode>"` for anything else. Compare two
/// snapshots to assert a tree is byte-for-byte unchanged.
pub fn tree_snapshot(dir: impl AsRef<Path>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    snapshot_into(dir.as_ref(), "", &mut out);
    out
}

/// What differs between two [`tree_snapshot`]s, one line per path (removed, changed,
/// added).
pub fn snapshot_diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> String {
    let mut out = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => out.push(format!("  removed  {k}")),
            Some(w) if w != v => out.push(format!("  changed  {k}: {v} -> {w}")),
            _ => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        out.push(format!("  added    {k}"));
    }
    out.join("\n")
}

/// A tmpfs mounted for one test, unmounted when dropped (even when the test panics).
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` on `dir` (created); fails the test if it cannot.
    pub fn mount(dir: &Path, options: &str) -> Tmpfs {
        fs::create_dir_all(dir).expect("mkdir mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .expect("spawn mount");
        assert!(
            status.success(),
            "mount -t tmpfs -o {options} tmpfs {} failed (tests run as root)",
            dir.display()
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// `None` (with a note on stderr) when tmpfs cannot be mounted here (not root, or no
    /// mount privilege in this container).
    pub fn try_mount(dir: &Path, options: &str) -> Option<Tmpfs> {
        fs::create_dir_all(dir).expect("mkdir mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir: dir.to_path_buf(),
            }),
            Ok(o) => {
                eprintln!(
                    "note: SKIPPED: mount -t tmpfs -o {options} failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("note: SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

fn snapshot_into(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target =
                fs::read_link(&path).unwrap_or_else(|e| panic!("readlink {}: {e}", path.display()));
            out.insert(rel, format!("link -> {}", target.to_string_lossy()));
        } else if ft.is_dir() {
            out.insert(rel.clone(), "dir".to_string());
            snapshot_into(&path, &rel, out);
        } else if ft.is_file() {
            let mode = meta.mode() & 0o7777;
            out.insert(rel, format!("{} {mode:o}", sha256_file(&path)));
        } else {
            out.insert(rel, format!("other {:o}", meta.mode()));
        }
    }
}

// ---------------------------------------------------------------------------
// Tools and ports
// ---------------------------------------------------------------------------

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Whether something accepts TCP connections on 127.0.0.1:`port` (within 500 ms).
pub fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Runs `cmd`, which must exit 0 (the test fails with its stderr otherwise); its stdout.
#[track_caller]
pub fn output_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A finished command's exit status, stdout and stderr, for an assertion message.
pub fn show_output(o: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Fails the test when `name` (a command name or an absolute path) is not
/// available. Tests never skip because a real component is missing.
#[track_caller]
pub fn require_tool(name: &str) {
    let found = Command::new("sh")
        .args(["-c", "command -v \"$1\"", "sh", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        panic!("missing {name}: run scripts/setup-test-env.sh");
    }
}

// ---------------------------------------------------------------------------
// Apache
// ---------------------------------------------------------------------------

const APACHE_BIN: &str = "/usr/sbin/apache2";
const APACHE_MODULES: &[&str] = &[
    "mpm_event",
    "authz_core",
    "authz_host",
    "dir",
    "mime",
    "autoindex",
    "alias",
];

/// A private Apache serving `root` on 127.0.0.1:`port`, started with its own
/// config and logs in its own temp dir. Stopped (by pid, via its `Child`
/// handle) when dropped.
pub struct Apache {
    pub port: u16,
    pub root: PathBuf,
    pid: u32,
    dir: tempfile::TempDir,
    child: Child,
}

/// Why one start attempt failed.
enum StartError {
    /// Someone else took the port between `free_port` and `Listen`.
    PortTaken(String),
    Other(String),
}

impl Apache {
    /// Starts Apache with `doc_root` as its `DocumentRoot` and waits until it
    /// answers HTTP. Panics (with the error log) if it does not come up.
    pub fn start(doc_root: &Path) -> Apache {
        Apache::start_with(doc_root, None, "")
    }

    /// Like [`Apache::start`], with HTTP basic auth (mod_auth_basic, an `htpasswd -B` file
    /// made with apache2-utils) required for every path under `location` (e.g. `/charts`):
    /// only `user` with `password` gets in, anyone else is answered 401.
    pub fn start_with_basic_auth(
        doc_root: &Path,
        location: &str,
        user: &str,
        password: &str,
    ) -> Apache {
        let auth = BasicAuth {
            location: location.to_string(),
            user: user.to_string(),
            password: password.to_string(),
        };
        Apache::start_with(doc_root, Some(&auth), "")
    }

    /// [`Apache::start`] with `extra` appended to the generated config (a `<Directory>`
    /// block, an `AddType`, a module to load).
    pub fn start_with_config(doc_root: &Path, extra: &str) -> Apache {
        Apache::start_with(doc_root, None, extra)
    }

    fn start_with(doc_root: &Path, auth: Option<&BasicAuth>, extra: &str) -> Apache {
        require_tool(APACHE_BIN);
        let root = doc_root
            .canonicalize()
            .unwrap_or_else(|e| panic!("doc root {}: {e}", doc_root.display()));
        check_world_traversable(&root);
        let mut last = String::new();
        for attempt in 1..=4 {
            match Apache::try_start(&root, auth, extra) {
                Ok(a) => return a,
                Err(StartError::PortTaken(log)) => {
                    last = format!("attempt {attempt}: port taken\n{log}");
                }
                Err(StartError::Other(msg)) => panic!("apache failed to start\n{msg}"),
            }
        }
        panic!("apache failed to start: port taken on every attempt\n{last}")
    }

    fn try_start(root: &Path, auth: Option<&BasicAuth>, extra: &str) -> Result<Apache, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("airgap-bundle-apache-")
            .tempdir_in(std::env::temp_dir())
            .expect("create apache temp dir");
        set_mode(dir.path(), 0o755);
        let d = dir.path();
        let port = free_port();
        let conf = d.join("httpd.conf");
        let mut config = apache_config(d, root, port);
        if let Some(auth) = auth {
            config.push_str(&basic_auth_config(d, auth));
        }
        config.push_str(extra);
        fs::write(&conf, config).expect("write httpd.conf");

        let stdout = fs::File::create(d.join("stdout.log")).expect("create stdout.log");
        let stderr = fs::File::create(d.join("stderr.log")).expect("create stderr.log");
        let child = Command::new(APACHE_BIN)
            .arg("-f")
            .arg(&conf)
            .arg("-DFOREGROUND")
            .env("APACHE_RUN_DIR", d)
            .env("APACHE_LOCK_DIR", d)
            .env("APACHE_LOG_DIR", d)
            .env("APACHE_PID_FILE", d.join("apache2.pid"))
            .env("APACHE_RUN_USER", "nobody")
            .env("APACHE_RUN_GROUP", "nogroup")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {APACHE_BIN}: {e}"));
        let pid = child.id();
        let mut apache = Apache {
            port,
            root: root.to_path_buf(),
            pid,
            dir,
            child,
        };

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = apache.child.try_wait().expect("try_wait apache") {
                let logs = apache.logs();
                // Drop must not try to stop an already-reaped process.
                return Err(if is_port_taken(&logs) {
                    StartError::PortTaken(logs)
                } else {
                    StartError::Other(format!("apache exited early with {status}\n{logs}"))
                });
            }
            if apache.answers_http() {
                // Confirm the answer came from *our* apache, not from whoever
                // might have grabbed the port: it must still be running.
                sleep(Duration::from_millis(50));
                if apache.child.try_wait().expect("try_wait apache").is_none() {
                    return Ok(apache);
                }
                continue;
            }
            if Instant::now() >= deadline {
                let logs = apache.logs();
                return Err(StartError::Other(format!(
                    "apache (pid {pid}) did not answer on 127.0.0.1:{port} within 10 s\n{logs}"
                )));
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn answers_http(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET / HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 16];
        let mut got = 0;
        while got < head.len() {
            match s.read(&mut head[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        head[..got].starts_with(b"HTTP/1.")
    }

    /// Everything Apache said about itself: stderr and the error log.
    fn logs(&self) -> String {
        let d = self.dir.path();
        let read = |name: &str| fs::read_to_string(d.join(name)).unwrap_or_default();
        format!(
            "--- apache stderr ---\n{}\n--- apache error.log ---\n{}\n--- httpd.conf ---\n{}",
            read("stderr.log"),
            read("error.log"),
            read("httpd.conf"),
        )
    }

    /// `http://127.0.0.1:<port>/<path>` (a leading `/` in `path` is optional).
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// The pid of the Apache parent process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Directory holding httpd.conf and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The access log so far, one request per line:
    /// `%h "%r" %>s %b "%{Range}i"`. Apache writes the line after the
    /// response, so use [`Apache::wait_access_log`] right after a request.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The error log so far.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Polls the access log (up to 5 s) until `pred` holds; returns it.
    #[track_caller]
    pub fn wait_access_log(&self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.access_log();
            if pred(&log) {
                return log;
            }
            if Instant::now() >= deadline {
                panic!("access log never matched; it is:\n{log}");
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// `GET /<path>` over HTTP/1.0: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, Vec<u8>) {
        let r = self.http_request("GET", path, &[]);
        (r.status, r.body)
    }

    /// `GET /<path>` with `Range: bytes=<from>-`: (status, body).
    pub fn http_get_range(&self, path: &str, from: u64) -> (u16, Vec<u8>) {
        let range = format!("bytes={from}-");
        let r = self.http_request("GET", path, &[("Range", &range)]);
        (r.status, r.body)
    }

    /// One raw HTTP/1.0 request with extra headers; the full response.
    pub fn http_request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_request(self.port, method, path, headers)
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        // Already exited (and reaped)? Nothing to stop.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM lets the parent stop its workers (which run as `nobody`)
        // before it exits; SIGKILL on the parent alone would orphan them
        // with the listening socket still open.
        signal_pid(self.pid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(25));
        }
        // Hard stop: the parent and any workers it still has, by pid.
        let workers = child_pids(self.pid);
        let _ = self.child.kill();
        for w in workers {
            signal_pid(w, "KILL");
        }
        let _ = self.child.wait();
    }
}

fn apache_config(dir: &Path, root: &Path, port: u16) -> String {
    let d = dir.display();
    let r = root.display();
    let mut c = String::new();
    c.push_str("ServerRoot /etc/apache2\n");
    c.push_str("ServerName 127.0.0.1\n");
    c.push_str(&format!("Listen 127.0.0.1:{port}\n"));
    for m in APACHE_MODULES {
        c.push_str(&format!(
            "LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n"
        ));
    }
    if running_as_root() {
        // Apache refuses to serve as root; its workers drop to nobody.
        c.push_str("User nobody\nGroup nogroup\n");
    }
    c.push_str(&format!(
        "\
PidFile {d}/apache2.pid
DefaultRuntimeDir {d}
ErrorLog {d}/error.log
LogLevel warn
CustomLog {d}/access.log \"%h \\\"%r\\\" %>s %b \\\"%{{Range}}i\\\"\"
TypesConfig /etc/mime.types
EnableSendfile Off
EnableMMAP Off
Timeout 60
KeepAlive On
HostnameLookups Off
StartServers 1
ServerLimit 4
ThreadsPerChild 16
MaxRequestWorkers 64
MinSpareThreads 4
MaxSpareThreads 32
DocumentRoot \"{r}\"
<Directory />
    Require all granted
    Options +Indexes
    AllowOverride None
</Directory>
DirectoryIndex index.html
"
    ));
    c
}

/// A path prefix of an [`Apache`] that requires one basic login.
struct BasicAuth {
    location: String,
    user: String,
    password: String,
}

/// The modules, the htpasswd file (written into `dir`, readable by the workers) and the
/// `<Location>` block that protect `auth.location`.
fn basic_auth_config(dir: &Path, auth: &BasicAuth) -> String {
    require_tool("htpasswd");
    let htpasswd = dir.join("htpasswd");
    let out = Command::new("htpasswd")
        .args(["-Bbn", &auth.user, &auth.password])
        .output()
        .expect("run htpasswd");
    assert!(
        out.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
    set_mode(&htpasswd, 0o644);
    let mut c = String::new();
    for m in ["auth_basic", "authn_core", "authn_file", "authz_user"] {
        c.push_str(&format!(
            "LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n"
        ));
    }
    c.push_str(&format!(
        "<Location \"{}\">\n    AuthType Basic\n    AuthName \"test-repo\"\n    AuthBasicProvider file\n    AuthUserFile \"{}\"\n    Require valid-user\n</Location>\n",
        auth.location,
        htpasswd.display()
    ));
    c
}

fn is_port_taken(logs: &str) -> bool {
    logs.contains("Address already in use") || logs.contains("could not bind")
}

fn running_as_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Apache's workers run as `nobody`: every ancestor of the doc root must be
/// searchable by others, or every request is a 403.
fn check_world_traversable(root: &Path) {
    for dir in root.ancestors() {
        let mode = fs::metadata(dir)
            .unwrap_or_else(|e| panic!("stat {}: {e}", dir.display()))
            .mode();
        if mode & 0o001 == 0 {
            panic!(
                "{} (mode {:o}) is not searchable by others, so apache (user nobody) \
                 cannot serve {}; use a Workspace (mode 0755) under a world-searchable TMPDIR",
                dir.display(),
                mode & 0o7777,
                root.display()
            );
        }
    }
}

/// Sends SIGnal `sig` (e.g. "TERM") to one pid, via the shell's `kill`.
fn signal_pid(pid: u32, sig: &str) {
    let _ = Command::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\"", "sh", sig, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Pids whose parent is `pid` (from /proc).
fn child_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."; comm may contain spaces/parens.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let ppid = after
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Raw HTTP client (no extra crates)
// ---------------------------------------------------------------------------

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header (name lowercased, value trimmed), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.0 request to 127.0.0.1:`port` with `Connection: close`; reads
/// the response to EOF (bounded by `Content-Length` when present).
pub fn http_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} /{} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n",
        path.trim_start_matches('/')
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("send request to 127.0.0.1:{port}: {e}"));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read response from 127.0.0.1:{port}: {e}"));
    parse_http_response(&raw, method.eq_ignore_ascii_case("HEAD"))
}

fn parse_http_response(raw: &[u8], head_only: bool) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "malformed HTTP response (no header end): {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(512)])
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let proto = parts.next().unwrap_or_default();
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| proto.starts_with("HTTP/"))
        .unwrap_or_else(|| panic!("malformed HTTP status line: {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = if head_only {
        Vec::new()
    } else {
        raw[split + 4..].to_vec()
    };
    let content_length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    if let (Some(len), false) = (content_length, head_only) {
        assert!(
            body.len() >= len,
            "truncated HTTP body: Content-Length {len}, got {} bytes",
            body.len()
        );
        body.truncate(len);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}
