//! Durability and late failures (SPEC §4 "Staged then committed", §5 "Durable"): a sync that
//! fails is exit 1 and never success, and a commit that fails after it replaced files puts
//! every one of them back byte for byte.
//!
//! A sync failure is provoked for real: an ext4 filesystem on a loop device whose backing
//! file is sparse on a small tmpfs. The ext4 believes it has room, the page cache takes the
//! writes, and the write-back fails with EIO/ENOSPC, which `fsync`/`syncfs` report. Bundles
//! are made offline: the blobs are put in the download cache and the locked manifest names
//! `http://example.org/…` URLs that are never fetched.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Makes `NAME.bundle.tar.zst` in `ws` from `(url path, bytes)` without a network: the
/// blobs go into the cache under their sha256 and `create` packs them from there.
fn offline_bundle(ws: &Workspace, name: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let mut manifest = format!("apiVersion: bundle/v1\nname: {name}\nversion: '1.0'\nfiles:\n");
    for (path, bytes) in files {
        let sha = sha256_bytes(bytes);
        ws.write(format!("cache/sha256/{sha}"), bytes);
        manifest.push_str(&format!(
            "  - url: http://example.org/{path}\n    sha256: {sha}\n    size: {}\n",
            bytes.len()
        ));
    }
    let lock = ws.write(format!("{name}.lock.yaml"), manifest);
    let bundle = ws.path(format!("{name}.bundle.tar.zst"));
    create_from_cache(
        &lock,
        &bundle,
        &ws.path("site.key"),
        &ws.path("cache"),
        &[],
        &[],
    )
    .assert_ok();
    bundle
}

fn install(ws: &Workspace, bundle: &Path, web: &Path) -> Run {
    run_bundle(
        &[
            "install".as_ref(),
            bundle.as_os_str(),
            "--pubkey".as_ref(),
            ws.path("site.pub").as_os_str(),
            "--web-root".as_ref(),
            web.as_os_str(),
            "--base-url".as_ref(),
            "http://web.site/".as_ref(),
        ],
        &[],
    )
}

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// An ext4 filesystem that accepts more than its backing store can hold: a sparse 200 MiB
/// image on a 24 MiB tmpfs, attached to a loop device. Unmounted and detached on drop.
struct FailingDisk {
    backing: PathBuf,
    mount: PathBuf,
    loop_dev: Option<String>,
    mounted: bool,
}

impl FailingDisk {
    /// `None` (with a note) where loop devices or mounts are not available.
    fn new(dir: &Path) -> Option<FailingDisk> {
        let mut disk = FailingDisk {
            backing: dir.join("backing"),
            mount: dir.join("mnt"),
            loop_dev: None,
            mounted: false,
        };
        fs::create_dir_all(&disk.backing).unwrap();
        fs::create_dir_all(&disk.mount).unwrap();
        let setup = || -> Result<(), String> {
            let backing = disk.backing.to_str().unwrap().to_string();
            sh(&["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", &backing])?;
            let image = format!("{backing}/disk.img");
            sh(&["truncate", "-s", "200M", &image])?;
            Ok(())
        };
        if let Err(e) = setup() {
            eprintln!("note: skipping, cannot mount a tmpfs: {e}");
            return None;
        }
        let image = disk.backing.join("disk.img");
        match sh(&["losetup", "-f", "--show", image.to_str().unwrap()]) {
            Ok(dev) => disk.loop_dev = Some(dev),
            Err(e) => {
                eprintln!("note: skipping, no loop device: {e}");
                return None;
            }
        }
        let dev = disk.loop_dev.clone().unwrap();
        sh(&["mkfs.ext4", "-q", &dev]).expect("mkfs.ext4 on the loop device");
        sh(&[
            "mount",
            "-o",
            "errors=continue",
            &dev,
            disk.mount.to_str().unwrap(),
        ])
        .expect("mount the loop device");
        disk.mounted = true;
        Some(disk)
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = sh(&["umount", self.mount.to_str().unwrap()]);
        }
        if let Some(dev) = &self.loop_dev {
            let _ = sh(&["losetup", "-d", dev]);
        }
        let _ = sh(&["umount", self.backing.to_str().unwrap()]);
    }
}

#[test]
fn a_failed_sync_at_install_is_exit_1_and_installs_nothing() {
    let ws = Workspace::new();
    keygen(&ws.path("site"));
    let bundle = offline_bundle(&ws, "syncfail", &[("big.bin", random_bytes(40 << 20, 1))]);
    let Some(disk) = FailingDisk::new(&ws.path("disk")) else {
        return;
    };
    let web = disk.mount.join("www");
    fs::create_dir(&web).unwrap();

    let run = install(&ws, &bundle, &web);
    run.assert_code(1)
        .assert_stderr_contains("cannot sync")
        .assert_stderr_contains("hint:");
    assert!(
        !run.stderr.contains("panicked"),
        "a panic instead of an error:\n{}",
        run.stderr
    );
    // Nothing under a final name: no file, no receipt, no variables.
    assert!(!web.join("files").exists(), "{}", run.stderr);
    assert!(!web.join(".bundle").exists());
    assert!(!web.join("kubespray-offline.yml").exists());
}

#[test]
fn a_failed_sync_at_create_leaves_no_bundle_and_no_signature() {
    let ws = Workspace::new();
    keygen(&ws.path("site"));
    let Some(disk) = FailingDisk::new(&ws.path("disk")) else {
        return;
    };
    let lock_of = |name: &str, bytes: &[u8]| {
        let sha = sha256_bytes(bytes);
        ws.write(format!("cache/sha256/{sha}"), bytes);
        ws.write(
            format!("{name}.lock.yaml"),
            format!(
                "apiVersion: bundle/v1\nname: {name}\nversion: '1.0'\nfiles:\n  - url: http://example.org/{name}.bin\n    sha256: {sha}\n    size: {}\n",
                bytes.len()
            ),
        )
    };
    let create = |lock: &Path, out: &Path| {
        create_from_cache(lock, out, &ws.path("site.key"), &ws.path("cache"), &[], &[])
    };
    // A small good bundle first (it fits), then a big one to the same name (it does not).
    let out = disk.mount.join("x.bundle.tar.zst");
    let sig = disk.mount.join("x.bundle.tar.zst.minisig");
    create(&lock_of("small", &random_bytes(64 << 10, 2)), &out).assert_ok();
    let (old_bundle, old_sig) = (fs::read(&out).unwrap(), fs::read(&sig).unwrap());

    let run = create(&lock_of("big", &random_bytes(40 << 20, 3)), &out);
    run.assert_code(1).assert_stderr_contains("cannot sync");
    // The old pair is still there and still matches; nothing else was left behind.
    assert_eq!(fs::read(&out).unwrap(), old_bundle, "{}", run.stderr);
    assert_eq!(fs::read(&sig).unwrap(), old_sig);
    let mut names: Vec<String> = fs::read_dir(&disk.mount)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lost+found")
        .collect();
    names.sort();
    assert_eq!(names, ["x.bundle.tar.zst", "x.bundle.tar.zst.minisig"]);
    let check = Command::new("minisign")
        .args(["-Vm"])
        .arg(&out)
        .arg("-p")
        .arg(ws.path("site.pub"))
        .output()
        .expect("run minisign");
    assert!(
        check.status.success(),
        "stock minisign rejects the pair left behind: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Clears the immutable flag it set, so that the workspace can be removed.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Option<Immutable> {
        match sh(&["chattr", "+i", path.to_str().unwrap()]) {
            Ok(_) => Some(Immutable(path.to_path_buf())),
            Err(e) => {
                eprintln!("note: skipping, chattr +i is not available here: {e}");
                None
            }
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = sh(&["chattr", "-i", self.0.to_str().unwrap()]);
    }
}

#[test]
fn a_rename_refused_late_in_the_commit_restores_every_replaced_file() {
    let ws = Workspace::new();
    keygen(&ws.path("site"));
    // Committed in path order: a.bin (replaces a file), m/n/new.bin (new directories),
    // z.bin (replaces a file that cannot be replaced: the commit fails there).
    let files = [
        ("a.bin", random_bytes(300_000, 10)),
        ("m/n/new.bin", random_bytes(200_000, 11)),
        ("z.bin", random_bytes(100_000, 12)),
    ];
    let bundle = offline_bundle(&ws, "late", &files);
    let web = ws.mkdir("www");
    let host = web.join("files/example.org");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("a.bin"), b"the previous a.bin\n").unwrap();
    fs::write(host.join("z.bin"), b"the previous z.bin\n").unwrap();
    let before = tree_snapshot(&web);
    let Some(_guard) = Immutable::set(&host.join("z.bin")) else {
        return;
    };

    let run = install(&ws, &bundle, &web);
    run.assert_code(1)
        .assert_stderr_contains("z.bin")
        .assert_stderr_contains("hint:");
    assert!(!run.stderr.contains("could not restore"), "{}", run.stderr);
    assert_eq!(
        fs::read(host.join("a.bin")).unwrap(),
        b"the previous a.bin\n",
        "the replaced file was not restored:\n{}",
        run.stderr
    );
    assert_eq!(tree_snapshot(&web), before, "{}", run.stderr);
    drop(_guard);

    // Positive control: with the cause gone, the same install succeeds.
    install(&ws, &bundle, &web).assert_ok();
    for (path, bytes) in &files {
        assert_eq!(
            sha256_file(host.join(path)),
            sha256_bytes(bytes),
            "{path} after the successful install"
        );
    }
}
