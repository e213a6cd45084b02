//! `--wait` end to end (SPEC §3 "Volumes", issue 17 part 3): volumes read one at a time from
//! one mount point whose medium is swapped. The test plays the operator on a real
//! pseudo-terminal: it answers each prompt by taking the previous volume out and putting
//! the asked one in (a wrong medium first, which must be named and asked for again), and
//! the install must equal one from all volumes in one directory. Without a terminal a
//! missing volume is exit 1 naming it; `q` at the prompt aborts; nothing is committed.

mod common;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, sleep};
use std::time::{Duration, Instant};

use common::install::{Built, Urls, assert_no_staging, install, make_bundle, names_starting};
use common::*;

/// How long any one wait on the child may take before the test fails (and kills it).
const STEP: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The bundle and the media
// ---------------------------------------------------------------------------

/// A bundle of a few MiB of random bytes, split into 1 MiB volumes beside the unsplit one.
struct Split {
    _ws: Workspace,
    built: Built,
    /// `DIR/NAME.bundle.tar.zst` of the split create: its volumes and list are beside it.
    base: PathBuf,
    count: usize,
    ws_root: PathBuf,
}

impl Split {
    fn new() -> Split {
        let ws = Workspace::new();
        let files = vec![
            ("bin/kubeadm".to_string(), random_bytes(1_900_000, 17)),
            ("bin/kubectl".to_string(), random_bytes(1_300_000, 18)),
            (
                "etc/readme.txt".to_string(),
                b"carried on sticks\n".to_vec(),
            ),
        ];
        let built = make_bundle(&ws, "b", "waiting", "1.0.0", &files, Urls::Local);
        let dir = built.bundle.parent().unwrap().to_path_buf();
        let base = ws
            .mkdir("split")
            .join(format!("{}.bundle.tar.zst", built.name));
        create_from_cache(
            &dir.join("manifest.lock.yaml"),
            &base,
            &ws.path("site.key"),
            &dir.join("cache"),
            &["--split-size", "1M"],
            &[],
        )
        .assert_ok();
        let count = (0..)
            .take_while(|n| self::volume(&base, *n).exists())
            .count();
        assert!(
            (3..=5).contains(&count),
            "expected 3 to 5 volumes of 1 MiB, got {count}"
        );
        Split {
            ws_root: ws.root().to_path_buf(),
            _ws: ws,
            built,
            base,
            count,
        }
    }

    fn name(&self) -> String {
        file_name(&self.base)
    }

    /// A fresh mount point holding the volume list, its signature and volume `.000`.
    fn mount(&self, tag: &str) -> PathBuf {
        let mount = self.ws_root.join(tag);
        fs::create_dir_all(&mount).unwrap();
        for suffix in [".volumes", ".volumes.minisig"] {
            let from = with_suffix(&self.base, suffix);
            fs::copy(&from, mount.join(file_name(&from))).unwrap();
        }
        self.insert(&mount, 0);
        mount
    }

    /// Copies volume `n` into the mount point.
    fn insert(&self, mount: &Path, n: usize) {
        fs::copy(
            volume(&self.base, n),
            mount.join(volume_name(&self.base, n)),
        )
        .unwrap();
    }

    /// The bundle path as the operator names it in the mount point.
    fn in_mount(&self, mount: &Path) -> PathBuf {
        mount.join(self.name())
    }

    /// A web root holding one file of its own, to show that nothing else moves.
    fn web_root(&self, tag: &str) -> PathBuf {
        let root = self.ws_root.join(tag);
        write_file(root.join("index.html"), "already here\n");
        root
    }
}

fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", base.display()))
}

fn volume(base: &Path, n: usize) -> PathBuf {
    with_suffix(base, &format!(".{n:03}"))
}

fn volume_name(base: &Path, n: usize) -> String {
    file_name(&volume(base, n))
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// A web root as the site sees it: without the staging an interrupted install keeps for
/// the next run (hidden, never under a final name, SPEC §6).
fn visible(web_root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut tree = tree_snapshot(web_root);
    tree.retain(|path, _| !path.starts_with(".bundle-staging-"));
    tree
}

/// What an interrupted install may leave: the web root as it was `before`, apart from at
/// most the one staging directory it keeps.
#[track_caller]
fn unchanged_but_kept_staging(
    before: &std::collections::BTreeMap<String, String>,
    web_root: &Path,
) {
    let now = visible(web_root);
    assert_eq!(*before, now, "{}", snapshot_diff(before, &now));
    let staging = names_starting(web_root, ".bundle-staging-");
    assert!(staging.len() <= 1, "{staging:?}");
}

/// A web root without the install receipt (it records the install time).
fn content_of(web_root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut tree = tree_snapshot(web_root);
    tree.retain(|path, _| !path.starts_with(".bundle/") && path != ".bundle");
    tree
}

fn install_args(bundle: &Path, pubkey: &Path, web_root: &Path) -> Vec<PathBuf> {
    ["install", "--wait"]
        .iter()
        .map(PathBuf::from)
        .chain([
            bundle.to_path_buf(),
            "--pubkey".into(),
            pubkey.to_path_buf(),
            "--web-root".into(),
            web_root.to_path_buf(),
        ])
        .collect()
}

// ---------------------------------------------------------------------------
// A child on a pseudo-terminal
// ---------------------------------------------------------------------------

/// `bundle` with stdin, stdout and stderr on the slave side of a fresh pty; the test
/// holds the master: it reads everything the child prints and types its answers.
struct OnPty {
    child: Child,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
    /// How much of the output the test has already acted on.
    seen: usize,
}

fn cloexec(fd: i32) {
    // SAFETY: fcntl on a descriptor this process owns.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    assert_eq!(rc, 0, "fcntl FD_CLOEXEC");
}

impl OnPty {
    fn spawn(args: &[PathBuf]) -> OnPty {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors; the null pointers ask for defaults.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // Not inherited by children other tests spawn meanwhile (a stray slave would keep
        // the master from seeing the end).
        cloexec(master);
        cloexec(slave);
        // SAFETY: both descriptors were just returned by openpty and are owned here only.
        let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut cmd = Command::new(bundle_bin());
        cmd.args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn().expect("spawn bundle on a pty");
        // The parent's copies of the slave close here: the master sees the end (EIO)
        // once the child has gone.
        drop(cmd);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut from = master.try_clone().unwrap();
        let sink = Arc::clone(&output);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnPty {
            child,
            master,
            output,
            reader: Some(reader),
            seen: 0,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Kills the child (by its own handle) and fails the test with what it printed.
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("{why}\n--- terminal output ---\n{}\n-----", self.text());
    }

    /// Waits until the output after what was already acted on contains `needle`; returns
    /// that new output (up to the needle's end) and marks it acted on.
    fn expect(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if let Some(at) = text.get(self.seen..).and_then(|t| t.find(needle)) {
                let end = self.seen + at + needle.len();
                let new = text[self.seen..end].to_string();
                self.seen = end;
                return new;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader drain what was printed before the exit.
                sleep(Duration::from_millis(200));
                if self
                    .text()
                    .get(self.seen..)
                    .is_some_and(|t| t.contains(needle))
                {
                    continue;
                }
                self.fail(&format!(
                    "bundle exited ({status}) without printing {needle:?}"
                ));
            }
            if start.elapsed() > STEP {
                self.fail(&format!("no {needle:?} within {STEP:?}"));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Types `line` and Enter, as the operator would.
    fn answer(&mut self, line: &str) {
        if let Err(e) = self.master.write_all(format!("{line}\n").as_bytes()) {
            self.fail(&format!("cannot type into the pty: {e}"));
        }
    }

    /// The exit code, and everything printed.
    fn finish(mut self) -> (i32, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > STEP {
                self.fail(&format!("bundle did not exit within {STEP:?}"));
            }
            sleep(Duration::from_millis(20));
        };
        let reader = self.reader.take().unwrap();
        let start = Instant::now();
        while !reader.is_finished() && start.elapsed() < Duration::from_secs(5) {
            sleep(Duration::from_millis(20));
        }
        (status.code().unwrap_or(-1), self.text())
    }

    /// The files of `dir` the child holds open (from `/proc/PID/fd`).
    fn open_files_in(&self, dir: &Path) -> Vec<PathBuf> {
        let dir = dir.canonicalize().unwrap();
        fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|fds| {
                fds.flatten()
                    .filter_map(|fd| fs::read_link(fd.path()).ok())
                    .filter(|p| p.starts_with(&dir))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for OnPty {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn prompt_for(split: &Split, n: usize) -> String {
    format!(
        "insert the medium holding {} (volume {} of {})",
        volume_name(&split.base, n),
        n + 1,
        split.count
    )
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// The operator swaps sticks at the prompts (a wrong one first for each of two volumes:
/// another volume, then an altered copy); the install equals one from all volumes in one
/// directory, and the child never holds a volume open while it asks for the next.
#[test]
fn install_wait_on_a_terminal_asks_for_each_medium_and_equals_a_normal_install() {
    let split = Split::new();
    let mount = split.mount("mount");
    let web_root = split.web_root("www-wait");
    let mut op = OnPty::spawn(&install_args(
        &split.in_mount(&mount),
        &split.built.pubkey,
        &web_root,
    ));
    for n in 1..split.count {
        let before = op.expect(&prompt_for(&split, n));
        if n == 1 {
            // Volume .000 was read from the first medium without a question.
            assert!(!before.contains(&prompt_for(&split, 0)), "{before}");
        }
        let held = op.open_files_in(&mount);
        if !held.is_empty() {
            op.fail(&format!(
                "asking for volume {n} while holding {held:?} open"
            ));
        }
        fs::remove_file(mount.join(volume_name(&split.base, n - 1))).unwrap();
        match n {
            1 => {
                // The wrong stick: another volume of the set.
                let wrong = (n + 1) % split.count;
                split.insert(&mount, wrong);
                op.answer("");
                let said = op.expect(&prompt_for(&split, n));
                let named = format!(
                    "holds {} (volume {} of {}), not {}",
                    volume_name(&split.base, wrong),
                    wrong + 1,
                    split.count,
                    volume_name(&split.base, n)
                );
                assert!(said.contains(&named), "wanted {named:?} in {said:?}");
                fs::remove_file(mount.join(volume_name(&split.base, wrong))).unwrap();
            }
            2 => {
                // The right name, but an altered copy of the right size.
                let mut bytes = fs::read(volume(&split.base, n)).unwrap();
                bytes[1000] ^= 0x01;
                fs::write(mount.join(volume_name(&split.base, n)), &bytes).unwrap();
                op.answer("");
                let said = op.expect(&prompt_for(&split, n));
                assert!(
                    said.contains("wrong medium:")
                        && said.contains(&format!(
                            "{} does not match the signed volume list",
                            volume_name(&split.base, n)
                        )),
                    "{said}"
                );
            }
            _ => {}
        }
        split.insert(&mount, n);
        op.answer("");
    }
    let (code, said) = op.finish();
    assert_eq!(code, 0, "install --wait failed:\n{said}");
    assert!(said.contains("installed waiting 1.0.0"), "{said}");
    assert_no_staging(&web_root);

    // The same bundle from all its volumes in one directory, without --wait.
    let reference = split.web_root("www-all");
    install(&split.base, &split.built.pubkey, &reference, &[]).assert_ok();
    let (got, want) = (content_of(&web_root), content_of(&reference));
    assert!(
        got.keys().any(|k| k.ends_with("bin/kubeadm")),
        "nothing installed: {got:?}"
    );
    assert_eq!(got, want, "{}", snapshot_diff(&want, &got));
}

/// Without a terminal, `--wait` cannot ask: a volume absent from the directory is exit 1
/// naming it, with the web root as it was; with every volume present it just reads them.
#[test]
fn install_wait_without_a_terminal_names_the_missing_volume_and_commits_nothing() {
    let split = Split::new();
    let mount = split.mount("mount");
    let web_root = split.web_root("www");
    let before = tree_snapshot(&web_root);
    let run = run_bundle(
        &install_args(&split.in_mount(&mount), &split.built.pubkey, &web_root),
        &[],
    );
    run.assert_code(1)
        .assert_stderr_contains(&format!(
            "volume {} (volume 2 of {}) is missing",
            volume_name(&split.base, 1),
            split.count
        ))
        .assert_stderr_contains("run on a terminal with --wait")
        // An interruption, not a failure: what verified is kept for the next run.
        .assert_stderr_contains("what verified so far is kept");
    assert!(
        !run.stderr.contains("insert the medium"),
        "asked without a terminal:\n{}",
        run.stderr
    );
    unchanged_but_kept_staging(&before, &web_root);

    // inspect needs only the first medium (the head is at the front of the stream).
    let run = run_bundle(
        &[
            OsStr::new("inspect"),
            OsStr::new("--wait"),
            OsStr::new("--json"),
            split.in_mount(&mount).as_os_str(),
        ],
        &[],
    );
    run.assert_ok()
        .assert_stdout_contains("\"name\": \"waiting\"")
        .assert_stdout_contains("\"not_read\": true");
    // Without --wait the same mount point is refused, naming the missing volume.
    let run = run_bundle(
        &[OsStr::new("inspect"), split.in_mount(&mount).as_os_str()],
        &[],
    );
    run.assert_code(1)
        .assert_stderr_contains(&volume_name(&split.base, 1));

    // The script's way: every volume in the directory (here, the one create wrote).
    let run = run_bundle(
        &[
            OsStr::new("verify"),
            OsStr::new("--wait"),
            split.base.as_os_str(),
            OsStr::new("--pubkey"),
            split.built.pubkey.as_os_str(),
        ],
        &[],
    );
    run.assert_ok().assert_stderr_contains("OK: waiting 1.0.0");

    // An altered volume in the directory is exit 3 naming it, before it is used.
    let mut bytes = fs::read(volume(&split.base, 1)).unwrap();
    bytes[10] ^= 0x80;
    fs::write(mount.join(volume_name(&split.base, 1)), &bytes).unwrap();
    let run = run_bundle(
        &install_args(&split.in_mount(&mount), &split.built.pubkey, &web_root),
        &[],
    );
    run.assert_code(3)
        .assert_stderr_contains(&volume_name(&split.base, 1));
    // A verification failure keeps nothing.
    assert_eq!(before, tree_snapshot(&web_root));
    assert_no_staging(&web_root);
}

/// `q` at the prompt aborts: exit 1 naming the volume, nothing committed; and a volume list
/// whose signature does not check out is refused before any question is asked.
#[test]
fn q_at_the_prompt_aborts_and_a_bad_list_is_refused_before_asking() {
    let split = Split::new();
    let mount = split.mount("mount");
    let web_root = split.web_root("www");
    let before = tree_snapshot(&web_root);
    let mut op = OnPty::spawn(&install_args(
        &split.in_mount(&mount),
        &split.built.pubkey,
        &web_root,
    ));
    op.expect(&prompt_for(&split, 1));
    op.answer("q");
    let (code, said) = op.finish();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains(&format!(
            "aborted at volume {} (volume 2 of {})",
            volume_name(&split.base, 1),
            split.count
        )),
        "{said}"
    );
    assert!(said.contains("what verified so far is kept"), "{said}");
    unchanged_but_kept_staging(&before, &web_root);

    // One changed byte in the list (a sum of volume .001 would let a forged stick in).
    let list = mount.join(format!("{}.volumes", split.name()));
    let text = fs::read_to_string(&list).unwrap();
    let line = text.lines().nth(2).unwrap().to_string();
    let flipped = if line.starts_with('0') { "1" } else { "0" };
    fs::write(
        &list,
        text.replace(&line, &format!("{flipped}{}", &line[1..])),
    )
    .unwrap();
    let op = OnPty::spawn(&install_args(
        &split.in_mount(&mount),
        &split.built.pubkey,
        &web_root,
    ));
    let (code, said) = op.finish();
    assert_eq!(code, 3, "{said}");
    assert!(!said.contains("insert the medium"), "asked first:\n{said}");
    assert_eq!(before, visible(&web_root));

    // The next run with every volume at hand finishes, and leaves no staging behind.
    install(&split.base, &split.built.pubkey, &web_root, &[]).assert_ok();
    assert!(
        visible(&web_root)
            .keys()
            .any(|k| k.ends_with("bin/kubectl")),
        "nothing installed"
    );
    assert_no_staging(&web_root);
}
