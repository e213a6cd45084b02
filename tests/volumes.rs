//! Split bundle volumes end to end (SPEC §3 "Volumes", issue 17 parts 1 and 3 without
//! `--wait`): `create --split-size` against a real Apache upstream, every stick checked on its
//! own with stock `minisign` and `sha256sum`, the concatenation read by stock `cmp`, `zstd`,
//! `tar` and `minisign`, installs from volumes equal to installs from the unsplit bundle, and
//! every damaged, missing or foreign volume refused with its name and the web root untouched.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use common::install::{assert_no_staging, install, make_world_readable};
use common::site::*;
use common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------
// The 200 MiB bundle, shared by the two tests that need it
// ---------------------------------------------------------------------------

/// A site of 205 MiB of incompressible files, its unsplit bundle and the same bundle (same
/// lock, key and `SOURCE_DATE_EPOCH`) split into 64 MiB volumes.
fn big_content() -> Vec<(&'static str, usize, u64)> {
    vec![
        ("images/k8s-images.tar", 96 * MIB as usize + 12_345, 11),
        ("bin/kubelet", 61 * MIB as usize + 1, 12),
        ("bin/kubeadm", 47 * MIB as usize + 777, 13),
        ("cni/cni-plugins.tgz", 900_001, 14),
        ("etc/readme.txt", 22, 15),
    ]
}

static BIG: Mutex<Weak<Big>> = Mutex::new(Weak::new());

fn big() -> Arc<Big> {
    shared_big(&BIG, &big_content(), &["--split-size", "64M"], false)
}

// ---------------------------------------------------------------------------
// 1. Splitting: sizes, the list, stock tools on each stick and on the whole
// ---------------------------------------------------------------------------

/// A 205 MiB bundle created with `--split-size 64M`: exactly the volumes, the whole's
/// signature and the signed list are written (no unsplit file); every volume but the last is
/// exactly 64 MiB; `create --json` reports them; the list is `sha256sum` output of every
/// volume under a header; each stick (one volume + the list + its signature, nothing else)
/// passes stock `minisign -Vm` and `sha256sum -c --ignore-missing`, and fails it when its
/// volume is another stick's; `cat` of the volumes is byte-identical to the unsplit bundle of
/// the same lock, key and `SOURCE_DATE_EPOCH`, stock `minisign` accepts it with
/// `NAME.minisig`, and `zstd -dc | tar -t` lists every entry; `verify` accepts the base name
/// and `.000`; `inspect` shows every volume and the list, in text and JSON.
#[test]
fn a_200_mib_bundle_splits_into_64_mib_volumes_each_checked_on_its_own_by_stock_tools() {
    let big = big();
    let site = &big.site;
    let base = &big.base;
    let dir = base.parent().unwrap();
    let vols = data_volumes(base);
    let unsplit_len = size_of(&big.unsplit);

    // What create wrote, and nothing else (no unsplit file, no temporaries).
    assert!(vols.len() >= 4, "{} volumes: {vols:?}", vols.len());
    assert_eq!(
        vols.len() as u64,
        unsplit_len.div_ceil(64 * MIB),
        "{unsplit_len} bytes in 64 MiB volumes"
    );
    assert_eq!(dir_names(dir), split_names(base, vols.len()));
    let sizes: Vec<u64> = vols.iter().map(|v| size_of(v)).collect();
    for (v, n) in vols.iter().zip(&sizes).take(vols.len() - 1) {
        assert_eq!(*n, 64 * MIB, "{} is not exactly 64 MiB", v.display());
    }
    let last = *sizes.last().unwrap();
    assert!(last > 0 && last <= 64 * MIB, "last volume: {last} bytes");
    assert_eq!(sizes.iter().sum::<u64>(), unsplit_len);

    // create --json.
    let j = &big.create_json;
    let reported: Vec<(String, u64)> = j["volumes"]
        .as_array()
        .unwrap_or_else(|| panic!("create --json has no volumes: {j:#}"))
        .iter()
        .map(|v| {
            (
                v["path"].as_str().unwrap().to_string(),
                v["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    let on_disk: Vec<(String, u64)> = vols
        .iter()
        .zip(&sizes)
        .map(|(v, n)| (v.display().to_string(), *n))
        .collect();
    assert_eq!(reported, on_disk, "{j:#}");
    assert_eq!(
        j["volume_list"].as_str(),
        Some(with_suffix(base, ".volumes").to_str().unwrap()),
        "{j:#}"
    );

    // The list: the header (binding the bundle's signed index), then `sha256sum` lines
    // with bare names, in order.
    let list = fs::read_to_string(with_suffix(base, ".volumes")).unwrap();
    let mut lines = list.lines();
    let verified = site.verify_json(base);
    assert_eq!(
        lines.next().unwrap(),
        format!(
            "# airgap-bundle volumes v1 split-size={} data={} total={unsplit_len} index={}",
            64 * MIB,
            vols.len(),
            verified["index_sha256"].as_str().unwrap()
        )
    );
    let want: Vec<String> = vols
        .iter()
        .map(|v| format!("{}  {}", sha256_file(v), file_name(v)))
        .collect();
    assert_eq!(lines.collect::<Vec<_>>(), want, "{list}");

    // Each stick on its own, with stock tools only.
    for (n, v) in vols.iter().enumerate() {
        let stick = stick(&site.ws.path(format!("stick-{n:03}")), base, v);
        let (minisign, sums) = stock_stick_check(&stick, base, &site.pubkey);
        let minisign = minisign.unwrap_or_else(|e| panic!("stick {n}: minisign: {e}"));
        assert!(
            minisign.contains("Signature and comment signature verified"),
            "{minisign}"
        );
        let sums = sums.unwrap_or_else(|e| panic!("stick {n}: sha256sum -c: {e}"));
        assert_eq!(
            sums.trim(),
            format!("{}: OK", file_name(v)),
            "stick {n} checks exactly its one volume"
        );
        fs::remove_dir_all(&stick).unwrap();
    }
    // Negative control: volume 001's bytes under volume 000's name fail the stock check.
    let wrong = site.ws.path("stick-wrong");
    stick(&wrong, base, &vols[1]);
    fs::rename(
        wrong.join(file_name(&vols[1])),
        wrong.join(file_name(&vols[0])),
    )
    .unwrap();
    let (minisign, sums) = stock_stick_check(&wrong, base, &site.pubkey);
    assert!(minisign.is_ok(), "{minisign:?}");
    let err = sums.expect_err("a stick holding the wrong volume passes sha256sum -c");
    assert!(
        err.contains(&format!("{}: FAILED", file_name(&vols[0]))),
        "{err}"
    );
    fs::remove_dir_all(&wrong).unwrap();

    // The concatenation is the unsplit bundle, byte for byte.
    let vol_args: Vec<&OsStr> = vols.iter().map(|v| v.as_os_str()).collect();
    let mut args = vec![big.unsplit.as_os_str()];
    args.extend(&vol_args);
    bash_ok(dir, r#"u="$1"; shift; cat -- "$@" | cmp - "$u""#, &args);
    // Stock minisign on the concatenation with NAME.minisig, as SPEC §3 promises.
    let whole = site.ws.path("concatenated.bundle.tar.zst");
    let mut args = vec![whole.as_os_str()];
    args.extend(&vol_args);
    bash_ok(dir, r#"w="$1"; shift; cat -- "$@" > "$w""#, &args);
    let o = stock(
        dir,
        "minisign",
        &[
            "-Vm".as_ref(),
            whole.as_os_str(),
            "-x".as_ref(),
            with_suffix(base, ".minisig").as_os_str(),
            "-p".as_ref(),
            site.pubkey.as_os_str(),
        ],
    );
    assert!(
        o.status.success(),
        "minisign -Vm on the concatenation\n{}",
        show_output(&o)
    );
    fs::remove_file(&whole).unwrap();
    // Stock zstd and tar read the volumes as one stream (SPEC: `cat NAME.0* | zstd -dc | tar -t`).
    let listing = bash_ok(
        dir,
        r#"cat -- "$1".0* | zstd -dc | tar -t"#,
        &[file_name(base).as_ref()],
    );
    let mut want = vec![
        "bundle/index.json".to_string(),
        "bundle/index.json.minisig".to_string(),
        "bundle/manifest.lock.yaml".to_string(),
    ];
    let mut content: Vec<String> = site.files.keys().cloned().collect();
    content.sort();
    want.extend(content);
    assert_eq!(listing.lines().collect::<Vec<_>>(), want);

    // verify from the base name and from the first volume.
    for arg in [base.clone(), vols[0].clone()] {
        site.verify(&arg)
            .assert_ok()
            .assert_stderr_contains(&site.ok_line());
    }

    // inspect: every volume, and where the list is; in JSON too.
    let run = inspect(base, false);
    run.assert_ok();
    for v in &vols {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with("volume ") && l.contains(&v.display().to_string())),
            "inspect does not show {}\n{}",
            v.display(),
            run.stdout
        );
    }
    let list_path = with_suffix(base, ".volumes");
    assert!(
        run.stdout.lines().any(|l| l.starts_with("volumes ")
            && l.contains(&format!("{} of them", vols.len()))
            && l.contains(&format!("listed in {}", list_path.display()))),
        "inspect has no `volumes … listed in …` line\n{}",
        run.stdout
    );
    for arg in [base.clone(), vols[0].clone()] {
        let run = inspect(&arg, true);
        run.assert_ok();
        let j: Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("inspect --json is not JSON: {e}\n{}", run.stdout));
        let shown: Vec<(String, u64)> = j["volumes"]
            .as_array()
            .unwrap_or_else(|| panic!("inspect --json has no volumes: {j:#}"))
            .iter()
            .map(|v| {
                (
                    v["path"].as_str().unwrap().to_string(),
                    v["size"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(shown, on_disk, "{j:#}");
        assert_eq!(j["volume_list"].as_str(), list_path.to_str(), "{j:#}");
    }
}

// ---------------------------------------------------------------------------
// 2. Installing from volumes
// ---------------------------------------------------------------------------

/// Installing the 205 MiB bundle from its 64 MiB volumes, named by the base name and by
/// `.000`, gives web roots equal file for file (content and mode) to an install of the
/// unsplit bundle, receipts aside (they record the bundle path and time) though they name
/// the same signed index; every upstream file is in place and Apache serves it.
#[test]
fn installing_from_volumes_equals_installing_the_unsplit_bundle() {
    let big = big();
    let site = &big.site;
    let name = &site.name;
    let web_unsplit = site.ws.mkdir("web-unsplit");
    let web_base = site.ws.mkdir("web-base");
    let web_first = site.ws.mkdir("web-000");

    let started = Instant::now();
    install(&big.unsplit, &site.pubkey, &web_unsplit, &[]).assert_ok();
    let unsplit_took = started.elapsed();
    let started = Instant::now();
    install(&big.base, &site.pubkey, &web_base, &[]).assert_ok();
    let split_took = started.elapsed();
    install(&volume(&big.base, 0), &site.pubkey, &web_first, &[]).assert_ok();
    eprintln!("note: install took {unsplit_took:.1?} unsplit, {split_took:.1?} from volumes");

    let want = snapshot_without_receipt(&web_unsplit, name);
    for (label, web) in [("base name", &web_base), (".000", &web_first)] {
        let got = snapshot_without_receipt(web, name);
        assert!(
            got == want,
            "install from the volumes by {label} differs from the unsplit install:\n{}",
            snapshot_diff(&want, &got)
        );
        assert_no_staging(web);
        assert_eq!(
            receipt(web, name)["index_sha256"],
            receipt(&web_unsplit, name)["index_sha256"],
            "{label}"
        );
    }
    // The upstream files themselves, not just equal trees.
    for (dest, sha) in &site.files {
        let got = want
            .get(dest)
            .unwrap_or_else(|| panic!("{dest} is not in the web root"));
        assert_eq!(got, &format!("{sha} 644"), "{dest}");
    }
    // And Apache serves them from the web root installed from volumes.
    let served = Apache::start(&web_base);
    let small = site
        .files
        .keys()
        .find(|k| k.ends_with("etc/readme.txt"))
        .unwrap();
    let (status, body) = served.http_get(small);
    assert_eq!(status, 200, "GET {small}");
    assert_eq!(sha256_bytes(&body), site.files[small], "GET {small}");
    drop(served);
    for web in [web_unsplit, web_base, web_first] {
        fs::remove_dir_all(web).unwrap();
    }
}

// ---------------------------------------------------------------------------
// 3. Missing, truncated, swapped, altered and foreign volumes; the list's signature
// ---------------------------------------------------------------------------

/// About 4.4 MiB of content: five 1 MiB volumes with `--split-size 1M`, the last one short.
fn small_content() -> Vec<(&'static str, usize, u64)> {
    vec![
        ("bin/tool-a", 2 * MIB as usize + 100_003, 21),
        ("bin/tool-b", 1_500_007, 22),
        ("cni/plugins.tgz", 700_001, 23),
        ("etc/readme.txt", 22, 24),
    ]
}

/// The split size of the small bundle, and what it must come to.
const SMALL_SPLIT: &str = "1M";
const SMALL_VOLUMES: usize = 5;

/// Damage done to a copy of the volumes directory before an install attempt.
type Damage = Box<dyn Fn(&Path, &Path)>;

/// One damage case: label, damage, exit code, what stderr must say, the volumes it must name
/// (and no other), whether `inspect` is run too.
type Case = (&'static str, Damage, i32, Vec<String>, Vec<usize>, bool);

/// Each damaged copy of a 5-volume bundle is refused by `verify`, `install` (by the base name
/// and by `.000`) and, for a missing or truncated volume, `inspect`, with the exit code of SPEC
/// §3 and a message naming the bad volume (and no other): a missing volume, the first, a
/// middle or the last, is exit 1 "missing"; a truncated volume, middle or last, exit 3
/// "truncated"; two swapped volumes, one altered byte, a volume of another bundle of the same
/// size, exit 3 naming them as not matching the signed list; a missing list signature, one
/// made with another key, or a list rewritten to bless an altered volume, exit 3. The web
/// root (holding an earlier file at one of the bundle's paths) is unchanged after every
/// attempt and no staging is left; the pristine copy then installs.
#[test]
fn damaged_missing_and_foreign_volumes_are_named_and_nothing_is_installed() {
    require_tool("minisign");
    let site = Site::new("small", &small_content());
    let base = site.create("vols/small.bundle.tar.zst", &["--split-size", SMALL_SPLIT]);
    let pristine = base.parent().unwrap().to_path_buf();
    assert_eq!(data_volumes(&base).len(), SMALL_VOLUMES);
    assert_eq!(dir_names(&pristine), split_names(&base, SMALL_VOLUMES));
    let last_size = size_of(&volume(&base, SMALL_VOLUMES - 1));
    assert!(last_size < MIB, "the last volume is short: {last_size}");

    // The same lock at another time: other bytes, volumes of the same sizes.
    let foreign = site.ws.path("foreign/small.bundle.tar.zst");
    site.create_at(&foreign, OTHER_EPOCH, &["--split-size", SMALL_SPLIT])
        .assert_ok();
    assert_eq!(size_of(&volume(&foreign, 1)), MIB);
    assert_ne!(
        sha256_file(volume(&foreign, 1)),
        sha256_file(volume(&base, 1)),
        "a different SOURCE_DATE_EPOCH gives other volume bytes"
    );

    // Another key, for a list signature the site key did not make.
    let (other_key, _) = keygen(&site.ws.path("other"));

    // The web root: an unrelated page and an earlier file at a path the bundle installs.
    let web = site.ws.mkdir("web");
    write_file(web.join("index.html"), "<h1>mirror</h1>\n");
    let tool_a = site
        .files
        .keys()
        .find(|k| k.ends_with("bin/tool-a"))
        .unwrap()
        .clone();
    write_file(web.join(&tool_a), "an earlier tool-a\n");
    make_world_readable(&web);
    let before = tree_snapshot(&web);

    let vname = |n: usize| volume_name(&base, n);
    let list_name = format!("{}.volumes", file_name(&base));
    let foreign_for_case = foreign.clone();
    let other_key_for_case = other_key.clone();

    let cases: Vec<Case> = vec![
        (
            "missing middle volume",
            Box::new(|d: &Path, b: &Path| fs::remove_file(d.join(volume_name(b, 2))).unwrap()),
            1,
            vec!["missing".into()],
            vec![2],
            true,
        ),
        (
            "missing first volume",
            Box::new(|d: &Path, b: &Path| fs::remove_file(d.join(volume_name(b, 0))).unwrap()),
            1,
            vec!["missing".into()],
            vec![0],
            true,
        ),
        (
            "missing last volume",
            Box::new(|d: &Path, b: &Path| {
                fs::remove_file(d.join(volume_name(b, SMALL_VOLUMES - 1))).unwrap()
            }),
            1,
            vec!["missing".into()],
            vec![SMALL_VOLUMES - 1],
            true,
        ),
        (
            "truncated middle volume",
            Box::new(|d: &Path, b: &Path| truncate_by(&d.join(volume_name(b, 1)), 4096)),
            3,
            vec!["truncated".into()],
            vec![1],
            true,
        ),
        (
            "truncated last volume",
            Box::new(|d: &Path, b: &Path| {
                truncate_by(&d.join(volume_name(b, SMALL_VOLUMES - 1)), 1)
            }),
            3,
            vec!["truncated".into()],
            vec![SMALL_VOLUMES - 1],
            true,
        ),
        (
            "volumes 001 and 002 swapped",
            Box::new(|d: &Path, b: &Path| {
                let (x, y) = (d.join(volume_name(b, 1)), d.join(volume_name(b, 2)));
                let tmp = d.join("swap.tmp");
                fs::rename(&x, &tmp).unwrap();
                fs::rename(&y, &x).unwrap();
                fs::rename(&tmp, &y).unwrap();
            }),
            3,
            vec!["do not match the signed volume list".into()],
            vec![1, 2],
            false,
        ),
        (
            "one byte altered in volume 002",
            Box::new(|d: &Path, b: &Path| flip_byte(&d.join(volume_name(b, 2)), MIB / 2 + 7)),
            3,
            vec!["does not match the signed volume list".into()],
            vec![2],
            false,
        ),
        (
            "volume 001 from another bundle of the same size",
            Box::new(move |d: &Path, b: &Path| {
                fs::copy(volume(&foreign_for_case, 1), d.join(volume_name(b, 1))).unwrap();
            }),
            3,
            vec!["does not match the signed volume list".into()],
            vec![1],
            false,
        ),
        (
            "volume list signature missing",
            Box::new(|d: &Path, b: &Path| {
                fs::remove_file(d.join(format!("{}.volumes.minisig", file_name(b)))).unwrap()
            }),
            3,
            vec![format!("{list_name}.minisig")],
            vec![],
            false,
        ),
        (
            "volume list signed by another key",
            Box::new(move |d: &Path, b: &Path| {
                resign_list(d, b, &other_key_for_case);
            }),
            3,
            vec![list_name.clone(), "signed by key".into()],
            vec![],
            false,
        ),
        (
            "list rewritten to bless an altered volume",
            Box::new(move |d: &Path, b: &Path| {
                let v = d.join(volume_name(b, 2));
                let old = sha256_file(&v);
                flip_byte(&v, 1234);
                let list = d.join(format!("{}.volumes", file_name(b)));
                let text = fs::read_to_string(&list).unwrap();
                assert!(text.contains(&old));
                fs::write(&list, text.replace(&old, &sha256_file(&v))).unwrap();
            }),
            3,
            vec![list_name.clone(), "signature does not match".into()],
            vec![],
            false,
        ),
    ];

    let mut failures = Vec::new();
    for (i, (label, damage, code, needles, named, with_inspect)) in cases.iter().enumerate() {
        let dir = site.ws.path(format!("case-{i:02}"));
        copy_dir(&pristine, &dir);
        let case_base = dir.join(file_name(&base));
        damage(&dir, &base);
        let mut runs: Vec<(String, Run)> = vec![
            ("verify".into(), site.verify(&case_base)),
            (
                "install BASE".into(),
                install(&case_base, &site.pubkey, &web, &[]),
            ),
            (
                "install .000".into(),
                install(&volume(&case_base, 0), &site.pubkey, &web, &[]),
            ),
        ];
        if *with_inspect {
            runs.push(("inspect".into(), inspect(&case_base, false)));
        }
        for (what, run) in &runs {
            let mut wrong = Vec::new();
            if run.stderr.contains("panicked") {
                wrong.push("panicked".to_string());
            }
            if run.code != *code {
                wrong.push(format!("exit {} (want {code})", run.code));
            }
            for needle in needles {
                if !run.stderr.contains(needle.as_str()) {
                    wrong.push(format!("no {needle:?}"));
                }
            }
            for n in 0..SMALL_VOLUMES {
                let said = run.stderr.contains(&vname(n));
                if named.contains(&n) && !said {
                    wrong.push(format!("does not name {}", vname(n)));
                }
                if !named.contains(&n) && said {
                    wrong.push(format!("also names {}, an intact volume", vname(n)));
                }
            }
            if !wrong.is_empty() {
                failures.push(format!(
                    "{label}: {what}: {}\n    stderr: {}",
                    wrong.join("; "),
                    run.stderr.trim().replace('\n', "\n            ")
                ));
            }
        }
        let after = tree_snapshot(&web);
        if after != before {
            failures.push(format!(
                "{label}: the web root changed:\n{}",
                snapshot_diff(&before, &after)
            ));
        }
        assert_no_staging(&web);
        fs::remove_dir_all(&dir).unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of the damaged-volume checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Stock tools agree with `bundle` about an altered volume on its own stick.
    let altered = site.ws.path("altered");
    copy_dir(&pristine, &altered);
    let altered_base = altered.join(file_name(&base));
    flip_byte(&volume(&altered_base, 2), 99);
    let stick_dir = stick(
        &site.ws.path("stick-altered"),
        &altered_base,
        &volume(&altered_base, 2),
    );
    let (minisign, sums) = stock_stick_check(&stick_dir, &altered_base, &site.pubkey);
    assert!(minisign.is_ok(), "{minisign:?}");
    let err = sums.expect_err("sha256sum -c accepts an altered volume");
    assert!(err.contains(&format!("{}: FAILED", vname(2))), "{err}");

    // Positive control: the pristine volumes verify and install over the same web root.
    site.verify(&base)
        .assert_ok()
        .assert_stderr_contains(&site.ok_line());
    install(&base, &site.pubkey, &web, &[]).assert_ok();
    let installed = tree_snapshot(&web);
    assert_eq!(
        installed.get(&tool_a).map(String::as_str),
        Some(format!("{} 644", site.files[&tool_a]).as_str()),
        "the pristine volumes install tool-a"
    );
}

/// Replaces `NAME.volumes.minisig` in `dir` by a signature of the same list made with
/// `key` (stock `minisign -S`, an unencrypted key).
fn resign_list(dir: &Path, base: &Path, key: &Path) {
    let list = format!("{}.volumes", file_name(base));
    let sig = format!("{list}.minisig");
    fs::remove_file(dir.join(&sig)).unwrap();
    let o = stock(
        dir,
        "minisign",
        &[
            "-S".as_ref(),
            "-s".as_ref(),
            key.as_os_str(),
            "-m".as_ref(),
            list.as_ref(),
            "-x".as_ref(),
            sig.as_ref(),
        ],
    );
    assert!(o.status.success(), "minisign -S\n{}", show_output(&o));
}

// ---------------------------------------------------------------------------
// 4. Re-running create into the same name
// ---------------------------------------------------------------------------

/// `create --split-size 1M` (5 volumes), then `--split-size 2M` to the same name leaves
/// exactly 3 volumes, the whole's signature and the list (no stale `.003`, `.004`), which
/// verify; then a create without `--split-size` leaves only the bundle and its signature
/// (volumes, list and list signature gone), which verify; then a split create again removes
/// the unsplit bundle (which a reader would otherwise take instead of the volumes).
#[test]
fn recreating_with_another_split_size_or_unsplit_leaves_no_stale_volumes() {
    let site = Site::new("small", &small_content());
    let base = site.ws.path("out/small.bundle.tar.zst");
    let dir = base.parent().unwrap().to_path_buf();
    let name = file_name(&base);
    let check = |step: &str, want: BTreeSet<String>| {
        assert_eq!(dir_names(&dir), want, "after {step}");
        site.verify(&base)
            .assert_ok()
            .assert_stderr_contains(&site.ok_line());
    };

    site.create_at(&base, EPOCH, &["--split-size", "1M"])
        .assert_ok();
    check("--split-size 1M", split_names(&base, SMALL_VOLUMES));

    site.create_at(&base, EPOCH, &["--split-size", "2M"])
        .assert_ok();
    check("--split-size 2M", split_names(&base, 3));
    let list = fs::read_to_string(with_suffix(&base, ".volumes")).unwrap();
    assert!(
        list.starts_with(&format!(
            "# airgap-bundle volumes v1 split-size={} data=3 ",
            2 * MIB
        )),
        "{list}"
    );
    assert_eq!(list.lines().count(), 4, "{list}");

    site.create_at(&base, EPOCH, &[]).assert_ok();
    check(
        "an unsplit create",
        [name.clone(), format!("{name}.minisig")]
            .into_iter()
            .collect(),
    );
    let unsplit_sha = sha256_file(&base);

    site.create_at(&base, EPOCH, &["--split-size", "1M"])
        .assert_ok();
    check("--split-size 1M again", split_names(&base, SMALL_VOLUMES));
    let vols = data_volumes(&base);
    let args: Vec<&OsStr> = vols.iter().map(|v| v.as_os_str()).collect();
    let cat_sha = bash_ok(&dir, r#"cat -- "$@" | sha256sum"#, &args);
    assert_eq!(
        cat_sha.split_whitespace().next(),
        Some(unsplit_sha.as_str()),
        "the volumes of the same lock, key and SOURCE_DATE_EPOCH are the unsplit bundle"
    );
}

// ---------------------------------------------------------------------------
// 5. Bad sizes
// ---------------------------------------------------------------------------

/// `--split-size` values that are not a size, have an unknown unit or are below 1M are usage
/// errors (exit 2) naming the value, and nothing is written; `1M` itself is accepted.
#[test]
fn bad_split_sizes_are_usage_errors_naming_the_value() {
    let site = Site::new("small", &small_content());
    let out_dir = site.ws.mkdir("out");
    let base = out_dir.join("small.bundle.tar.zst");
    for bad in ["10K", "4X", "lots", "1048575", "0", ""] {
        let run = site.create_at(&base, EPOCH, &["--split-size", bad]);
        run.assert_code(2)
            .assert_stderr_contains("--split-size")
            .assert_stderr_contains(&format!("`{bad}`"));
        assert!(
            dir_names(&out_dir).is_empty(),
            "--split-size {bad:?} wrote {:?}",
            dir_names(&out_dir)
        );
    }
    site.create_at(&base, EPOCH, &["--split-size", "1048576"])
        .assert_ok();
    assert_eq!(dir_names(&out_dir), split_names(&base, SMALL_VOLUMES));
}

// ---------------------------------------------------------------------------
// 6. Known gap: volumes of another build that all have the listed sizes
// ---------------------------------------------------------------------------

/// The signed list of one build beside a complete set of volumes of another build of the
/// same lock (another `SOURCE_DATE_EPOCH`, every volume the listed size: the operator copied
/// the new volumes and the old list). Stock `sha256sum -c` fails every stick, so `bundle`
/// must refuse too (SPEC §3: a volume whose bytes do not match the signed list is exit 3
/// naming it), with the web root unchanged.
///
/// The reader hashes each volume as it streams in order (and the rest after the stream
/// verified), so this is caught even though the volumes form a valid bundle.
#[test]
fn a_complete_set_of_volumes_from_another_build_is_refused_by_the_list() {
    let site = Site::new("small", &small_content());
    let listed = site.create(
        "listed/small.bundle.tar.zst",
        &["--split-size", SMALL_SPLIT],
    );
    // The header's sizes (its `index=` names each build's own signed index).
    let header = |b: &Path| {
        let text = fs::read_to_string(with_suffix(b, ".volumes")).unwrap();
        let first = text.lines().next().unwrap();
        first.split(" index=").next().unwrap().to_string()
    };
    let want = header(&listed);
    // Rebuilds differ by a few compressed bytes; about one creation time in twenty gives the
    // same volume sizes.
    let other = site.ws.path("other/small.bundle.tar.zst");
    let found = (1_700_000_001u64..1_700_000_400).find(|epoch| {
        site.create_at(&other, &epoch.to_string(), &["--split-size", SMALL_SPLIT])
            .assert_ok();
        header(&other) == want
    });
    let epoch = found.unwrap_or_else(|| panic!("no rebuild has the volume sizes of {want}"));
    for suffix in [".volumes", ".volumes.minisig"] {
        fs::copy(with_suffix(&listed, suffix), with_suffix(&other, suffix)).unwrap();
    }
    for n in 0..SMALL_VOLUMES {
        assert_eq!(size_of(&volume(&other, n)), size_of(&volume(&listed, n)));
        assert_ne!(
            sha256_file(volume(&other, n)),
            sha256_file(volume(&listed, n))
        );
    }
    // Stock tools: the list is genuine, and no stick holds a listed volume.
    let (minisign, sums) = stock_stick_check(other.parent().unwrap(), &other, &site.pubkey);
    assert!(minisign.is_ok(), "{minisign:?}");
    let err = sums.expect_err("sha256sum -c accepts volumes the list does not name");
    assert!(
        err.contains(&format!("{}: FAILED", volume_name(&other, 0))),
        "{err}"
    );

    let web = site.ws.mkdir("web");
    write_file(web.join("index.html"), "<h1>mirror</h1>\n");
    make_world_readable(&web);
    let before = tree_snapshot(&web);
    for run in [
        site.verify(&other),
        install(&other, &site.pubkey, &web, &[]),
    ] {
        let said = format!("(rebuilt at {epoch})\n{}", run.stderr);
        assert_eq!(run.code, 3, "{said}");
        assert!(
            run.stderr.contains("not match the signed volume list"),
            "{said}"
        );
        assert!(run.stderr.contains(&volume_name(&other, 0)), "{said}");
    }
    let after = tree_snapshot(&web);
    assert!(after == before, "{}", snapshot_diff(&before, &after));
    assert_no_staging(&web);
}
