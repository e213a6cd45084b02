//! `bundle install` never reaches outside the web root (SPEC §4 "Never outside a
//! destination"): no symlink (or non-directory) below the web root is followed or written
//! through, `--web-root` itself may be a symlink, and a commit that fails part-way restores
//! every file it replaced byte for byte, even when the installing user may not hard-link
//! those files (fs.protected_hardlinks=1).

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::install::*;
use common::*;

// ---------------------------------------------------------------------------
// Helpers (the ones shared with tests/install.rs are in tests/common/install.rs)
// ---------------------------------------------------------------------------

/// The unprivileged user (and group) the rollback test installs as.
const NOBODY: u32 = 65534;

/// [`make_bundle`] naming the files by their `http://127.0.0.1:PORT/<rel>` URLs, with the
/// bundle and the public key made world-readable (the rollback test installs as 65534).
fn make_readable_bundle(
    ws: &Workspace,
    tag: &str,
    name: &str,
    version: &str,
    files: &[(String, Vec<u8>)],
) -> Built {
    let built = make_bundle(ws, tag, name, version, files, Urls::Local);
    for p in [&built.bundle, &built.pubkey] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o644)).expect("chmod 644");
    }
    built
}

/// Runs `argv` as uid/gid 65534 with no supplementary groups (`setpriv`), stdin closed.
fn run_as_nobody(argv: &[&std::ffi::OsStr]) -> Run {
    require_tool("setpriv");
    let out = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg("--")
        .args(argv)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("spawn setpriv");
    let code = out.status.code().unwrap_or_else(|| {
        panic!(
            "{argv:?} as {NOBODY} was killed by signal {:?}\n{}",
            out.status.signal(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Run {
        code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `bundle install` as uid/gid 65534.
fn install_as_nobody(bundle: &Path, pubkey: &Path, web_root: &Path) -> Run {
    let mut argv: Vec<&std::ffi::OsStr> = vec![bundle_bin().as_ref()];
    argv.extend(install_args(bundle, pubkey, web_root));
    run_as_nobody(&argv)
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {uid}:{gid} {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------
// 1. No symlink (or non-directory) below the web root is followed
// ---------------------------------------------------------------------------

/// One thing planted in the web root before an install.
struct Placement {
    label: &'static str,
    /// Path relative to the web root the install must refuse and name.
    offending: String,
    /// What the message must call it (matched case-insensitively).
    word: &'static str,
}

/// For each placement (a)–(g) of a symlink, a dangling symlink or a regular file where the
/// install needs a directory or writes a file: exit 1 naming the path relative to the web
/// root and saying `symlink` / `not a directory`; the outside directory and the web root are
/// byte-for-byte unchanged (planted links still in place); no staging directory is left.
#[test]
fn symlinks_and_non_directories_below_the_web_root_are_refused() {
    let ws = Workspace::new();
    let files = vec![
        ("dir/sub/tool.bin".to_string(), random_bytes(100_000, 1)),
        ("dir/x.bin".to_string(), random_bytes(50_000, 2)),
    ];
    let built = make_readable_bundle(&ws, "b", "guard", "1.0.0", &files);
    let h = format!("files/{}", built.host);
    let placements = [
        Placement {
            label: "(a) files -> outside dir",
            offending: "files".into(),
            word: "symlink",
        },
        Placement {
            label: "(b) files/HOST -> outside dir",
            offending: h.clone(),
            word: "symlink",
        },
        Placement {
            label: "(c) files/HOST/dir -> outside dir",
            offending: format!("{h}/dir"),
            word: "symlink",
        },
        Placement {
            label: "(d) files/HOST/dir dangling symlink",
            offending: format!("{h}/dir"),
            word: "symlink",
        },
        Placement {
            label: "(e) files/HOST/dir/sub/tool.bin -> outside file",
            offending: format!("{h}/dir/sub/tool.bin"),
            word: "symlink",
        },
        Placement {
            label: "(f) files/HOST/dir is a regular file",
            offending: format!("{h}/dir"),
            word: "not a directory",
        },
        Placement {
            label: "(g) .bundle -> outside dir",
            offending: ".bundle".into(),
            word: "symlink",
        },
    ];

    let mut table = Vec::new();
    let mut failures = Vec::new();
    for (i, p) in placements.iter().enumerate() {
        let web = ws.mkdir(format!("web-{i}"));
        let outside = ws.mkdir(format!("outside-{i}"));
        ws.write(format!("outside-{i}/keep.txt"), "outside the web root\n");
        ws.write(format!("outside-{i}/secret.txt"), "not to be replaced\n");
        let at = |rel: &str| web.join(rel);
        match i {
            0 => symlink(&outside, at("files")).unwrap(),
            1 => {
                fs::create_dir_all(at("files")).unwrap();
                symlink(&outside, at(&h)).unwrap();
            }
            2 => {
                fs::create_dir_all(at(&h)).unwrap();
                symlink(&outside, at(&format!("{h}/dir"))).unwrap();
            }
            3 => {
                fs::create_dir_all(at(&h)).unwrap();
                symlink(outside.join("missing"), at(&format!("{h}/dir"))).unwrap();
            }
            4 => {
                fs::create_dir_all(at(&format!("{h}/dir/sub"))).unwrap();
                symlink(
                    outside.join("secret.txt"),
                    at(&format!("{h}/dir/sub/tool.bin")),
                )
                .unwrap();
            }
            5 => {
                fs::create_dir_all(at(&h)).unwrap();
                fs::write(at(&format!("{h}/dir")), "a file, not a directory\n").unwrap();
            }
            6 => symlink(&outside, at(".bundle")).unwrap(),
            _ => unreachable!(),
        }
        make_world_readable(&outside);
        let web_before = tree_snapshot(&web);
        let outside_before = tree_snapshot(&outside);

        let run = install(&built.bundle, &built.pubkey, &web, &[]);
        let web_after = tree_snapshot(&web);
        let outside_after = tree_snapshot(&outside);
        let staging = names_starting(&web, ".bundle-staging-");

        let mut why = Vec::new();
        if run.stderr.contains("panicked") {
            why.push("panicked".to_string());
        }
        if run.code != 1 {
            why.push(format!("exit {} (expected 1)", run.code));
        }
        if !run.stderr.contains(&p.offending) {
            why.push(format!("stderr does not name {:?}", p.offending));
        }
        if !run.stderr.to_lowercase().contains(p.word) {
            why.push(format!("stderr does not say {:?}", p.word));
        }
        if outside_after != outside_before {
            why.push(format!(
                "the outside directory changed:\n{}",
                snapshot_diff(&outside_before, &outside_after)
            ));
        }
        if web_after != web_before {
            why.push(format!(
                "the web root changed:\n{}",
                snapshot_diff(&web_before, &web_after)
            ));
        }
        if !staging.is_empty() {
            why.push(format!("staging left: {staging:?}"));
        }
        table.push(format!(
            "{:<48} exit {} | outside {} | web root {} | {}",
            p.label,
            run.code,
            if outside_after == outside_before {
                "unchanged"
            } else {
                "CHANGED"
            },
            if web_after == web_before {
                "unchanged"
            } else {
                "CHANGED"
            },
            first_line(&run.stderr)
        ));
        if !why.is_empty() {
            failures.push(format!(
                "{}:\n  {}\n--- stderr ---\n{}",
                p.label,
                why.join("\n  "),
                run.stderr
            ));
        }
    }
    eprintln!("symlink placements:\n{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "{} of {} placements not refused as SPEC §4 requires:\n\n{}\n\nsummary:\n{}",
        failures.len(),
        placements.len(),
        failures.join("\n\n"),
        table.join("\n")
    );
}

// ---------------------------------------------------------------------------
// 2. --web-root itself may be a symlink
// ---------------------------------------------------------------------------

/// `--web-root LINK` where LINK -> the real web root: installs normally into the real
/// directory; the link stays a link.
#[test]
fn web_root_given_as_a_symlink_installs_into_the_real_directory() {
    let ws = Workspace::new();
    let files = vec![
        ("dir/sub/tool.bin".to_string(), random_bytes(80_000, 11)),
        ("top.bin".to_string(), random_bytes(30_000, 12)),
    ];
    let built = make_readable_bundle(&ws, "b", "linked", "1.0.0", &files);
    let real = ws.mkdir("srv/www");
    let link = ws.path("web-link");
    symlink(&real, &link).unwrap();

    let run = install(&built.bundle, &built.pubkey, &link, &[]);
    run.assert_ok()
        .assert_stderr_contains("installed linked 1.0.0: 2 files written");
    for (dest, (_, sha, _)) in &built.files {
        let path = real.join(dest);
        assert!(
            fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()),
            "{dest} is not a regular file under the real web root"
        );
        assert_eq!(sha256_file(&path), *sha, "{dest}");
    }
    assert!(real.join(".bundle/linked-1.0.0.json").is_file());
    assert!(real.join("kubespray-offline.yml").is_file());
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_link(&link).unwrap(), real);
    assert_no_staging(&real);
}

// ---------------------------------------------------------------------------
// 3. Rollback restores replaced files without relying on hard links
// ---------------------------------------------------------------------------

/// Files of the rollback bundle: `a.bin` replaces an existing file; the others sort after
/// it and need new nested directories, so running out of inodes while the commit creates
/// them fails the commit after `a.bin` was replaced.
fn rollback_files() -> Vec<(String, Vec<u8>)> {
    vec![
        ("a.bin".to_string(), random_bytes(40_000, 21)),
        ("z1/z2/z3/b.bin".to_string(), random_bytes(20_000, 22)),
        ("z1/z2/z3/z4/z5/c.bin".to_string(), random_bytes(20_000, 23)),
        ("z1/y1/y2/d.bin".to_string(), random_bytes(20_000, 24)),
    ]
}

/// The content `a.bin` has before the install.
fn old_a_bin() -> Vec<u8> {
    random_bytes(40_000, 99)
}

/// Web root = a tmpfs (owned by 65534) with a small `nr_inodes`, holding a root-owned
/// 0644 `files/HOST/a.bin` in directories owned by 65534; `bundle install` runs as 65534,
/// which fs.protected_hardlinks=1 forbids to hard-link `a.bin`. For every `nr_inodes` where
/// the install fails: exit 1 with "No space left", `a.bin` byte-identical (sha256), the web
/// root snapshot unchanged (no new directory), no staging left. With enough inodes it
/// installs. The same loop runs as root first: root may hard-link `a.bin`, but on tmpfs a
/// hard link also takes an inode, so at one limit the backup link itself fails for lack of
/// inodes.
#[test]
fn rollback_restores_a_replaced_file_the_installer_cannot_hard_link() {
    assert_eq!(
        fs::read_to_string("/proc/sys/fs/protected_hardlinks")
            .unwrap()
            .trim(),
        "1",
        "this test needs fs.protected_hardlinks=1"
    );
    let ws = Workspace::new();
    let built = make_readable_bundle(&ws, "b", "rollback", "1.0.0", &rollback_files());
    let host_dir = format!("files/{}", built.host);
    let a_rel = format!("{host_dir}/a.bin");
    let old = old_a_bin();
    let old_sha = sha256_bytes(&old);
    assert_ne!(old_sha, built.files[&a_rel].1, "a.bin must change");
    let mnt = ws.path("inode-fs");

    // As root (hard links allowed, though they cost a tmpfs inode) and as 65534 (denied).
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for as_nobody in [false, true] {
        let who = if as_nobody { "uid 65534" } else { "root" };
        outcomes.push(format!("install as {who}:"));
        let mut failed_runs = 0;
        let mut succeeded = false;
        for nr_inodes in 4..60 {
            let guard = Tmpfs::mount(
                &mnt,
                &format!("size=50m,nr_inodes={nr_inodes},uid={NOBODY},gid={NOBODY},mode=0755"),
            );
            // Pre-populate as root: files/ and files/HOST/ owned by 65534, a.bin by root.
            let host = mnt.join(&host_dir);
            fs::create_dir_all(&host).unwrap();
            for d in [mnt.join("files"), host.clone()] {
                fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
                chown(&d, NOBODY, NOBODY);
            }
            let a = mnt.join(&a_rel);
            fs::write(&a, &old).unwrap();
            fs::set_permissions(&a, fs::Permissions::from_mode(0o644)).unwrap();
            chown(&a, 0, 0);
            assert_eq!(fs::metadata(&mnt).unwrap().uid(), NOBODY);

            // The premise: 65534 may not hard-link root's a.bin (the attempt creates nothing).
            if as_nobody && nr_inodes == 4 {
                let probe = host.join("probe");
                let ln = run_as_nobody(&["ln".as_ref(), a.as_os_str(), probe.as_os_str()]);
                assert_ne!(ln.code, 0, "65534 could hard-link a.bin: {ln:?}");
                assert!(
                    ln.stderr.contains("Operation not permitted"),
                    "ln failed for another reason: {ln:?}"
                );
                assert!(!probe.exists());
            }
            let before = tree_snapshot(&mnt);

            let run = if as_nobody {
                install_as_nobody(&built.bundle, &built.pubkey, &mnt)
            } else {
                install(&built.bundle, &built.pubkey, &mnt, &[])
            };
            let after = tree_snapshot(&mnt);
            if run.code == 0 {
                for (dest, (_, sha, _)) in &built.files {
                    assert_eq!(sha256_file(mnt.join(dest)), *sha, "{who}: {dest}");
                }
                run.assert_stderr_contains("installed rollback 1.0.0: 4 files written");
                assert_no_staging(&mnt);
                outcomes.push(format!("  nr_inodes={nr_inodes}: installed"));
                succeeded = true;
                drop(guard);
                break;
            }
            failed_runs += 1;
            let a_now = match fs::symlink_metadata(&a) {
                Ok(m) if m.is_file() => {
                    let sha = sha256_file(&a);
                    if sha == old_sha {
                        "a.bin kept".to_string()
                    } else if sha == built.files[&a_rel].1 {
                        "a.bin NEW CONTENT".to_string()
                    } else {
                        "a.bin CHANGED".to_string()
                    }
                }
                Ok(_) => "a.bin NOT A FILE".to_string(),
                Err(_) => "a.bin LOST".to_string(),
            };
            outcomes.push(format!(
                "  nr_inodes={nr_inodes}: exit {}, {a_now}, web root {}: {}",
                run.code,
                if after == before {
                    "unchanged"
                } else {
                    "CHANGED"
                },
                first_line(&run.stderr)
            ));
            let mut why = Vec::new();
            if run.code != 1 || !run.stderr.contains("No space left") {
                why.push(format!(
                    "expected exit 1 and \"No space left\", got exit {}",
                    run.code
                ));
            }
            if run.stderr.contains("panicked") {
                why.push("panic".to_string());
            }
            if a_now != "a.bin kept" {
                why.push(format!("{a_now} (sha256 before: {old_sha})"));
            }
            if after != before {
                why.push(format!(
                    "the web root changed:\n{}",
                    snapshot_diff(&before, &after)
                ));
            }
            let staging = names_starting(&mnt, ".bundle-staging-");
            if !staging.is_empty() {
                why.push(format!("staging left: {staging:?}"));
            }
            if !why.is_empty() {
                failures.push(format!(
                    "{who}, nr_inodes={nr_inodes}: {}\n--- stderr ---\n{}",
                    why.join("\n  "),
                    run.stderr
                ));
            }
            drop(guard);
        }
        assert!(
            succeeded,
            "{who}: never succeeded:\n{}",
            outcomes.join("\n")
        );
        // The commit creates 8 new directories (z1..z5, y1, y2, .bundle) after a.bin:
        // running out of inodes must have hit it at several points, not only while staging.
        assert!(
            failed_runs >= 8,
            "{who}: too few failing inode limits to reach the commit:\n{}",
            outcomes.join("\n")
        );
    }
    eprintln!("rollback outcomes:\n{}", outcomes.join("\n"));
    assert!(
        failures.is_empty(),
        "{} failed installs did not leave the web root as it was:\n\n{}\n\noutcomes:\n{}",
        failures.len(),
        failures.join("\n\n"),
        outcomes.join("\n")
    );
}

// ---------------------------------------------------------------------------
// 4. Control: a re-install replaces a file with different content
// ---------------------------------------------------------------------------

/// An ordinary install (as root) over a web root that already holds `files/HOST/a.bin`
/// with other content: exit 0, a.bin has the new content, everything else installed.
#[test]
fn reinstall_over_an_existing_file_replaces_it() {
    let ws = Workspace::new();
    let built = make_readable_bundle(&ws, "b", "replace", "1.0.0", &rollback_files());
    let web = ws.mkdir("web");
    let a_rel = format!("files/{}/a.bin", built.host);
    ws.write(format!("web/{a_rel}"), old_a_bin());
    make_world_readable(&web);

    let run = install(&built.bundle, &built.pubkey, &web, &[]);
    run.assert_ok()
        .assert_stderr_contains("installed replace 1.0.0: 4 files written");
    for (dest, (_, sha, _)) in &built.files {
        assert_eq!(sha256_file(web.join(dest)), *sha, "{dest}");
    }
    assert_eq!(
        fs::metadata(web.join(&a_rel)).unwrap().mode() & 0o7777,
        0o644
    );
    assert!(web.join(".bundle/replace-1.0.0.json").is_file());
    assert_no_staging(&web);
}

// ---------------------------------------------------------------------------
// Special files among the receipts
// ---------------------------------------------------------------------------

/// A FIFO planted among the receipts (`.bundle/aaa-1.json`, read before the bundle's own
/// when the variables are rebuilt from every receipt): install neither blocks on it nor
/// touches it, and installs the files (it would hang forever before the fix).
#[test]
fn a_fifo_among_the_receipts_neither_blocks_install_nor_is_touched() {
    let ws = Workspace::new();
    let built = small_bundle(&ws, "b", "fifo", 700);
    let web = ws.mkdir("web");
    let fifo = ws.mkdir("web/.bundle").join("aaa-1.json");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path this test owns.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}", fifo.display());

    let args = install_args(&built.bundle, &built.pubkey, &web);
    let result = run_bundle_with_deadline(ws.root(), &args, &[], Duration::from_secs(30));
    let Some(run) = result.run else {
        panic!(
            "install still running after {:?} (blocked opening the FIFO); killed it\n--- stderr so far ---\n{}",
            result.elapsed, result.stderr
        );
    };
    run.assert_ok()
        .assert_stderr_contains("installed fifo 1.0.0: 4 files written");
    assert!(
        result.elapsed < Duration::from_secs(20),
        "install took {:?}",
        result.elapsed
    );
    for (dest, (_, sha, _)) in &built.files {
        assert_eq!(sha256_file(web.join(dest)), *sha, "{dest}");
    }
    assert!(web.join(".bundle/fifo-1.0.0.json").is_file());
    let ft = fs::symlink_metadata(&fifo)
        .unwrap_or_else(|e| panic!("the FIFO is gone: {e}"))
        .file_type();
    assert!(
        ft.is_fifo(),
        "{} is no longer a FIFO: {ft:?}",
        fifo.display()
    );
    assert_no_staging(&web);
}
