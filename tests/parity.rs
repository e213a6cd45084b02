//! Parity volumes end to end (SPEC §3 "Volumes", issue 17 part 2): `create --split-size 64M
//! --parity 2` of a 205 MiB bundle against a real Apache upstream writes two Reed–Solomon
//! parity volumes that stock `minisign` and `sha256sum` check like the data volumes, while
//! stock `cat | zstd -dc | tar -t` still reads the data volumes alone; `verify` and `install`
//! rebuild up to two missing or damaged volumes (naming them) and install exactly what a
//! clean install gives; more bad volumes than parity are refused naming every one, with the
//! web root untouched.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use common::install::{assert_no_staging, make_world_readable};
use common::site::*;
use common::*;
use serde_json::Value;

/// A 205 MiB site, its unsplit bundle, and the same bundle (same lock, key and
/// `SOURCE_DATE_EPOCH`) as 64 MiB volumes with two parity volumes.
fn big_content() -> Vec<(&'static str, usize, u64)> {
    vec![
        ("images/k8s-images.tar", 96 * MIB as usize + 12_345, 31),
        ("bin/kubelet", 61 * MIB as usize + 1, 32),
        ("bin/kubeadm", 47 * MIB as usize + 777, 33),
        ("etc/readme.txt", 22, 34),
    ]
}

static BIG: Mutex<Weak<Big>> = Mutex::new(Weak::new());

fn big() -> Arc<Big> {
    shared_big(
        &BIG,
        &big_content(),
        &["--split-size", "64M", "--parity", "2"],
        true,
    )
}

/// `BASE.pNN`.
fn parity(base: &Path, j: usize) -> PathBuf {
    with_suffix(base, &format!(".p{j:02}"))
}

/// A copy of the split bundle's directory in `to`: hard links (the tests replace a file
/// before damaging it, never write through a link).
fn link_copy(from: &Path, to: &Path) -> PathBuf {
    fs::create_dir_all(to).unwrap();
    for name in dir_names(from) {
        fs::hard_link(from.join(&name), to.join(&name)).unwrap();
    }
    to.to_path_buf()
}

/// How a volume of a copy is damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    Missing,
    /// Bytes flipped in the middle.
    Altered,
    Truncated,
}

/// Damages `path` in a [`link_copy`]: the link is replaced by a real copy first.
fn damage(path: &Path, how: Damage) {
    let bytes = fs::read(path).unwrap();
    fs::remove_file(path).unwrap();
    match how {
        Damage::Missing => {}
        Damage::Altered => {
            let mut bytes = bytes;
            let mid = bytes.len() / 2;
            for b in &mut bytes[mid..mid + 100] {
                *b ^= 0xa5;
            }
            fs::write(path, bytes).unwrap();
        }
        Damage::Truncated => fs::write(path, &bytes[..bytes.len() - 4096]).unwrap(),
    }
}

/// `bundle verify … [--json]` with `TMPDIR` set to `tmp`.
fn verify_in(site: &Site, bundle: &Path, tmp: &Path, json: bool) -> Run {
    let mut args: Vec<&OsStr> = vec![
        "verify".as_ref(),
        bundle.as_os_str(),
        "--pubkey".as_ref(),
        site.pubkey.as_os_str(),
    ];
    if json {
        args.push("--json".as_ref());
    }
    run_bundle(&args, &[("TMPDIR", tmp.to_str().unwrap())])
}

/// Peak memory allowed to a verify that rebuilds two 64 MiB volumes of a 205 MiB bundle.
const MAX_VERIFY_RSS: u64 = 100 * MIB;

/// `bundle verify` (text output) under `/usr/bin/time`: the run (stderr without time's
/// line) and its peak resident memory in bytes.
fn verify_measured(site: &Site, bundle: &Path, tmp: &Path) -> (Run, u64) {
    require_tool("/usr/bin/time");
    let o = std::process::Command::new("/usr/bin/time")
        .args(["-f", "peak-rss-kib=%M", bundle_bin(), "verify"])
        .arg(bundle)
        .arg("--pubkey")
        .arg(&site.pubkey)
        .env("TMPDIR", tmp)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let (rest, kib) = stderr
        .trim_end()
        .rsplit_once("peak-rss-kib=")
        .unwrap_or_else(|| panic!("no peak from /usr/bin/time\n{stderr}"));
    let run = Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: rest.to_string(),
    };
    (run, kib.trim().parse::<u64>().unwrap() * 1024)
}

/// `bundle install --json` into `web` with `TMPDIR` set to `tmp`.
fn install_in(site: &Site, bundle: &Path, web: &Path, tmp: &Path) -> Run {
    let args = [
        "install".as_ref(),
        bundle.as_os_str(),
        "--pubkey".as_ref(),
        site.pubkey.as_os_str(),
        "--web-root".as_ref(),
        web.as_os_str(),
        "--json".as_ref(),
    ];
    run_bundle(&args, &[("TMPDIR", tmp.to_str().unwrap())])
}

/// The `"rebuilt"` paths of a `--json` report.
fn rebuilt_of(run: &Run) -> Vec<String> {
    let j: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON: {e}\n{}\n{}", run.stdout, run.stderr));
    j["rebuilt"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn assert_empty_dir(dir: &Path, what: &str) {
    let left = dir_names(dir);
    assert!(left.is_empty(), "{what} left {left:?} in {}", dir.display());
}

// ---------------------------------------------------------------------------
// 1. Writing parity
// ---------------------------------------------------------------------------

/// Two parity volumes beside the data volumes, each as long as the first (64 MiB) and no
/// longer; listed after the data volumes under a header saying `parity=2`, so the stock
/// `minisign -Vm` + `sha256sum -c` check covers them; `create --json` and `inspect` name
/// them; the data volumes alone are still the unsplit bundle (`cat | cmp`) and stock
/// `zstd -dc | tar -t` lists every entry from `NAME.0*`.
#[test]
fn parity_volumes_are_listed_signed_and_the_data_volumes_stay_a_stock_bundle() {
    let big = big();
    let site = &big.site;
    let base = &big.base;
    let dir = base.parent().unwrap();
    let vols = data_volumes(base);
    assert!(vols.len() >= 4, "{vols:?}");
    let mut want = split_names(base, vols.len());
    want.insert(file_name(&parity(base, 0)));
    want.insert(file_name(&parity(base, 1)));
    assert_eq!(
        dir_names(dir),
        want,
        "exactly the data, parity and list files"
    );
    for j in 0..2 {
        let p = parity(base, j);
        assert_eq!(size_of(&p), 64 * MIB, "{}", p.display());
    }

    // The list: header with parity, data lines, then the parity lines.
    let list = fs::read_to_string(with_suffix(base, ".volumes")).unwrap();
    let mut lines = list.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with(&format!(
            "# airgap-bundle volumes v1 split-size={} data={} total={} parity=2 shard=",
            64 * MIB,
            vols.len(),
            size_of(&big.unsplit)
        )),
        "{header}"
    );
    let mut listed: Vec<PathBuf> = vols.clone();
    listed.push(parity(base, 0));
    listed.push(parity(base, 1));
    let want_lines: Vec<String> = listed
        .iter()
        .map(|v| format!("{}  {}", sha256_file(v), file_name(v)))
        .collect();
    assert_eq!(lines.collect::<Vec<_>>(), want_lines);

    // Stock tools check every volume, parity included; a parity stick on its own too.
    let (minisign, sums) = stock_stick_check(dir, base, &site.pubkey);
    minisign.unwrap_or_else(|e| panic!("minisign: {e}"));
    let sums = sums.unwrap_or_else(|e| panic!("sha256sum -c: {e}"));
    for v in &listed {
        assert!(sums.contains(&format!("{}: OK", file_name(v))), "{sums}");
    }
    let parity_stick = stick(&site.ws.path("stick-p01"), base, &parity(base, 1));
    let (minisign, sums) = stock_stick_check(&parity_stick, base, &site.pubkey);
    assert!(minisign.is_ok(), "{minisign:?}");
    assert_eq!(
        sums.unwrap().trim(),
        format!("{}: OK", file_name(&parity(base, 1)))
    );
    // Negative control: an altered parity volume fails the stock check.
    damage(
        &parity_stick.join(file_name(&parity(base, 1))),
        Damage::Altered,
    );
    let (_, sums) = stock_stick_check(&parity_stick, base, &site.pubkey);
    let err = sums.expect_err("sha256sum -c accepts an altered parity volume");
    assert!(err.contains("FAILED"), "{err}");
    fs::remove_dir_all(&parity_stick).unwrap();

    // create --json names the parity volumes.
    let j = &big.create_json;
    let reported: Vec<(String, u64)> = j["parity_volumes"]
        .as_array()
        .unwrap_or_else(|| panic!("no parity_volumes: {j:#}"))
        .iter()
        .map(|v| {
            (
                v["path"].as_str().unwrap().to_string(),
                v["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    let on_disk: Vec<(String, u64)> = (0..2)
        .map(|j| (parity(base, j).display().to_string(), 64 * MIB))
        .collect();
    assert_eq!(reported, on_disk, "{j:#}");

    // The data volumes alone are the unsplit bundle; stock zstd and tar read them.
    let mut args: Vec<&OsStr> = vec![big.unsplit.as_os_str()];
    args.extend(vols.iter().map(|v| v.as_os_str()));
    bash_ok(dir, r#"u="$1"; shift; cat -- "$@" | cmp - "$u""#, &args);
    let listing = bash_ok(
        dir,
        r#"cat -- "$1".0* | zstd -dc | tar -t"#,
        &[file_name(base).as_ref()],
    );
    assert_eq!(listing.lines().count(), 3 + site.files.len(), "{listing}");

    // inspect shows them.
    let run = inspect(base, false);
    run.assert_ok();
    for j in 0..2 {
        let p = parity(base, j).display().to_string();
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with("parity ") && l.contains(&p)),
            "inspect does not show {p}\n{}",
            run.stdout
        );
    }
    let run = inspect(base, true);
    run.assert_ok();
    let j: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        j["parity_volumes"].as_array().map(Vec::len),
        Some(2),
        "{j:#}"
    );

    // And the intact set verifies without rebuilding anything.
    let tmp = site.ws.mkdir("tmp-intact");
    let run = verify_in(site, base, &tmp, true);
    run.assert_ok();
    assert!(rebuilt_of(&run).is_empty(), "{}", run.stdout);
    assert!(!run.stderr.contains("rebuilt"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------
// 2. Rebuilding
// ---------------------------------------------------------------------------

/// Runs verify and install on a damaged copy and checks both rebuilt exactly `rebuilt`
/// (named in `--json`, and by verify on stderr), that the install equals the clean one, and that
/// neither left anything in TMPDIR, the web root's staging or beside the volumes.
fn check_rebuilt(big: &Big, label: &str, copy: &Path, rebuilt: &[PathBuf]) {
    let site = &big.site;
    let base = copy.join(file_name(&big.base));
    let before = dir_names(copy);
    let tmp = site.ws.mkdir(format!("tmp-{label}"));
    let want: Vec<String> = rebuilt.iter().map(|p| p.display().to_string()).collect();

    let run = verify_in(site, &base, &tmp, true);
    assert_eq!(run.code, 0, "{label}: verify --json\n{}", run.stderr);
    assert_eq!(rebuilt_of(&run), want, "{label}: verify --json");
    assert_empty_dir(&tmp, "verify --json");
    let (run, peak) = verify_measured(site, &base, &tmp);
    assert_eq!(run.code, 0, "{label}: verify\n{}", run.stderr);
    eprintln!(
        "note: {label}: verify with rebuild peaked at {} MiB",
        peak >> 20
    );
    // Flat memory: far below the rebuilt volumes (64 MiB each) and the bundle (205 MiB).
    assert!(
        peak < MAX_VERIFY_RSS,
        "{label}: verify peaked at {peak} bytes"
    );
    assert!(run.stderr.contains(&site.ok_line()), "{}", run.stderr);
    for p in &want {
        assert!(
            run.stderr.contains(&format!("rebuilt {p} from parity")),
            "{label}: verify does not say it rebuilt {p}\n{}",
            run.stderr
        );
    }
    assert_empty_dir(&tmp, "verify");

    let web = site.ws.mkdir(format!("web-{label}"));
    let run = install_in(site, &base, &web, &tmp);
    assert_eq!(run.code, 0, "{label}: install\n{}", run.stderr);
    assert_eq!(rebuilt_of(&run), want, "{label}: install --json");
    let clean = snapshot_without_receipt(
        big.clean_web.as_deref().expect("a clean install"),
        &site.name,
    );
    let got = snapshot_without_receipt(&web, &site.name);
    assert!(
        got == clean,
        "{label}: the install from rebuilt volumes differs from the clean one:\n{}",
        snapshot_diff(&clean, &got)
    );
    assert_no_staging(&web);
    assert_empty_dir(&tmp, "install");
    assert_eq!(
        dir_names(copy),
        before,
        "{label}: the volumes' directory changed"
    );
    fs::remove_dir_all(&web).unwrap();
}

/// One data volume deleted and another with bytes flipped in its middle: `verify` and
/// `install` rebuild both (found before the read, the missing one at open), say so, and
/// install what the unsplit bundle installs. One altered volume alone is found only when
/// the streaming read fails: both rebuild it then and run again (install from the start,
/// its first attempt's staging gone). A damaged parity volume plus a missing data volume
/// still rebuild with two parity volumes.
#[test]
fn up_to_two_bad_volumes_are_rebuilt_for_verify_and_install() {
    let big = big();
    let site = &big.site;
    let pristine = big.base.parent().unwrap();
    let name = file_name(&big.base);

    // Missing 001 and altered 002.
    let copy = link_copy(pristine, &site.ws.path("two-bad"));
    let b = copy.join(&name);
    damage(&volume(&b, 1), Damage::Missing);
    damage(&volume(&b, 2), Damage::Altered);
    // inspect cannot check the list's signature, so it does not rebuild: it says so.
    let run = inspect(&b, false);
    run.assert_code(1)
        .assert_stderr_contains(&volume(&b, 1).display().to_string())
        .assert_stderr_contains("rebuild them from the parity volumes");
    check_rebuilt(&big, "two-bad", &copy, &[volume(&b, 1), volume(&b, 2)]);
    fs::remove_dir_all(&copy).unwrap();

    // Only 000 altered: found by the failed read, then rebuilt.
    let copy = link_copy(pristine, &site.ws.path("altered-only"));
    let b = copy.join(&name);
    damage(&volume(&b, 0), Damage::Altered);
    check_rebuilt(&big, "altered-only", &copy, &[volume(&b, 0)]);
    fs::remove_dir_all(&copy).unwrap();

    // A damaged parity volume and a missing (last) data volume.
    let copy = link_copy(pristine, &site.ws.path("parity-bad"));
    let b = copy.join(&name);
    let last = data_volumes(&big.base).len() - 1;
    damage(&parity(&b, 0), Damage::Altered);
    damage(&volume(&b, last), Damage::Missing);
    check_rebuilt(&big, "parity-bad", &copy, &[volume(&b, last)]);
    fs::remove_dir_all(&copy).unwrap();
}

/// Three bad volumes with two parity volumes: `verify` and `install` exit 3 naming all
/// three (exit 1 when all three are merely missing), and the web root, holding an earlier
/// file at one of the bundle's paths, is unchanged with no staging left.
#[test]
fn more_bad_volumes_than_parity_are_refused_naming_every_one() {
    let big = big();
    let site = &big.site;
    let pristine = big.base.parent().unwrap();
    let name = file_name(&big.base);
    let web = site.ws.mkdir("web-refused");
    write_file(web.join("index.html"), "<h1>mirror</h1>\n");
    let readme = site
        .files
        .keys()
        .find(|k| k.ends_with("etc/readme.txt"))
        .unwrap();
    write_file(web.join(readme), "an earlier readme\n");
    make_world_readable(&web);
    let before = tree_snapshot(&web);

    // (label, [(is a parity volume, its number, damage)], exit code)
    type Case = (&'static str, Vec<(bool, usize, Damage)>, i32);
    let cases: Vec<Case> = vec![
        (
            "two data and a parity volume damaged",
            vec![
                (false, 0, Damage::Missing),
                (false, 2, Damage::Altered),
                (true, 1, Damage::Truncated),
            ],
            3,
        ),
        (
            "three data volumes missing",
            vec![
                (false, 0, Damage::Missing),
                (false, 1, Damage::Missing),
                (false, 3, Damage::Missing),
            ],
            1,
        ),
    ];
    for (label, damages, code) in cases {
        let copy = link_copy(pristine, &site.ws.path("refused"));
        let b = copy.join(&name);
        let mut named = Vec::new();
        for (is_parity, n, how) in damages {
            let p = if is_parity {
                parity(&b, n)
            } else {
                volume(&b, n)
            };
            damage(&p, how);
            named.push(p.display().to_string());
        }
        let tmp = site.ws.mkdir("tmp-refused");
        for (what, run) in [
            ("verify", verify_in(site, &b, &tmp, false)),
            ("install", install_in(site, &b, &web, &tmp)),
        ] {
            assert_eq!(run.code, code, "{label}: {what}\n{}", run.stderr);
            assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
            for p in &named {
                assert!(
                    run.stderr.contains(p.as_str()),
                    "{label}: {what} does not name {p}\n{}",
                    run.stderr
                );
            }
            assert!(
                run.stderr
                    .contains("the 2 parity volumes can rebuild at most 2"),
                "{label}: {what}\n{}",
                run.stderr
            );
            assert!(!run.stderr.contains("rebuilt "), "{}", run.stderr);
        }
        let after = tree_snapshot(&web);
        assert!(
            after == before,
            "{label}: {}",
            snapshot_diff(&before, &after)
        );
        assert_no_staging(&web);
        assert_empty_dir(&tmp, label);
        fs::remove_dir_all(&copy).unwrap();
        fs::remove_dir_all(&tmp).unwrap();
    }
}

/// A bundle of one data volume (about 2 MiB with `--split-size 8M`) gets a parity volume
/// that rebuilds it whole; a create to the same name without `--parity` then leaves no
/// stale parity volume (and a list without parity lines), and one without `--split-size`
/// none either.
#[test]
fn one_volume_with_parity_and_recreating_without_it_leaves_no_stale_parity() {
    let site = Site::new("one", &[("bin/tool", 2 * MIB as usize + 12_345, 41)]);
    let base = site.ws.path("out/one.bundle.tar.zst");
    let dir = base.parent().unwrap().to_path_buf();
    site.create_at(&base, EPOCH, &["--split-size", "8M", "--parity", "1"])
        .assert_ok();
    let mut want = split_names(&base, 1);
    want.insert(file_name(&parity(&base, 0)));
    assert_eq!(dir_names(&dir), want);
    let first = size_of(&volume(&base, 0));
    assert_eq!(size_of(&parity(&base, 0)), first + first % 2);

    let copy = link_copy(&dir, &site.ws.path("one-missing"));
    let b = copy.join(file_name(&base));
    damage(&volume(&b, 0), Damage::Missing);
    let tmp = site.ws.mkdir("tmp-one");
    let run = verify_in(&site, &b, &tmp, true);
    run.assert_ok();
    assert_eq!(rebuilt_of(&run), vec![volume(&b, 0).display().to_string()]);
    assert_empty_dir(&tmp, "verify");

    site.create_at(&base, EPOCH, &["--split-size", "1M"])
        .assert_ok();
    assert_eq!(
        dir_names(&dir),
        split_names(&base, 3),
        "after a create without --parity"
    );
    let list = fs::read_to_string(with_suffix(&base, ".volumes")).unwrap();
    assert!(!list.contains("parity") && !list.contains(".p00"), "{list}");
    site.verify(&base).assert_ok();

    site.create_at(&base, EPOCH, &["--split-size", "8M", "--parity", "2"])
        .assert_ok();
    assert!(parity(&base, 1).exists());
    site.create_at(&base, EPOCH, &[]).assert_ok();
    let name = file_name(&base);
    assert_eq!(
        dir_names(&dir),
        [name.clone(), format!("{name}.minisig")]
            .into_iter()
            .collect(),
        "after an unsplit create"
    );
}

// ---------------------------------------------------------------------------
// 3. Usage
// ---------------------------------------------------------------------------

/// `--parity` without `--split-size`, out of 1..=255, or with an odd split size is a usage
/// error (exit 2) and nothing is written.
#[test]
fn parity_without_a_split_size_or_out_of_range_is_a_usage_error() {
    let ws = Workspace::new();
    let out_dir = ws.mkdir("out");
    let out = out_dir.join("x.bundle.tar.zst");
    let lock = ws.write("manifest.lock.yaml", "apiVersion: bundle/v1\n");
    let key = ws.write("site.key", "not a key\n");
    for (extra, needle) in [
        (vec!["--parity", "2"], "--split-size"),
        (vec!["--split-size", "64M", "--parity", "0"], "--parity"),
        (vec!["--split-size", "64M", "--parity", "256"], "--parity"),
        (vec!["--split-size", "1048577", "--parity", "1"], "odd"),
    ] {
        let run = create_from_cache(&lock, &out, &key, &ws.path("cache"), &extra, &[]);
        run.assert_code(2).assert_stderr_contains(needle);
        assert_empty_dir(&out_dir, &format!("{extra:?}"));
    }
}
