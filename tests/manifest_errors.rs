//! Manifest errors (SPEC §2, §6 "Errors and exit codes"): every malformed manifest is a
//! usage error (exit 2) whose message starts with `file:line:column` and says what is
//! wrong and what is accepted. No server is needed: nothing here gets as far as a download
//! (files that must be "downloaded" are pre-seeded in the cache).

mod common;

use std::path::Path;

use common::*;

const HEX_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// `bundle lock <manifest> -o out.lock.yaml` in the workspace, with its own cache.
fn lock(ws: &Workspace, manifest: &str) -> Run {
    common::net::lock(ws, manifest, "out.lock.yaml", "cache", &["--retries", "0"])
}

/// `bundle create <manifest> -o out.bundle.tar.zst` with a fresh unencrypted key.
fn create(ws: &Workspace, manifest: &str) -> Run {
    if !ws.path("site.key").exists() {
        keygen(&ws.path("site"));
    }
    common::net::create(
        ws,
        manifest,
        "out.bundle.tar.zst",
        "cache",
        &["--retries", "0"],
    )
}

/// Writes `text` as `name` in a new workspace and runs `lock` on it.
fn lock_text(name: &str, text: impl AsRef<[u8]>) -> (Workspace, Run) {
    let ws = Workspace::new();
    ws.write(name, text);
    let run = lock(&ws, name);
    (ws, run)
}

/// Exit 2, one `error: <position>: ...` message containing every needle, and no output.
#[track_caller]
fn assert_manifest_error(ws: &Workspace, run: &Run, position: &str, needles: &[&str]) {
    run.assert_code(2);
    let prefix = format!("error: {position}: ");
    assert!(
        run.stderr.starts_with(&prefix),
        "stderr does not start with {prefix:?}:\n{}",
        run.stderr
    );
    for n in needles {
        run.assert_stderr_contains(n);
    }
    assert!(
        !ws.path("out.lock.yaml").exists() && !ws.path("out.bundle.tar.zst").exists(),
        "a failed command wrote its output"
    );
}

/// Line and column of the `error: <file>:L:C:` prefix.
#[track_caller]
fn position(run: &Run, file: &str) -> (usize, usize) {
    let rest = run
        .stderr
        .strip_prefix(&format!("error: {file}:"))
        .unwrap_or_else(|| panic!("no `error: {file}:` prefix:\n{}", run.stderr));
    let mut parts = rest.splitn(3, ':');
    let line = parts.next().and_then(|s| s.parse().ok());
    let column = parts.next().and_then(|s| s.parse().ok());
    match (line, column) {
        (Some(l), Some(c)) => (l, c),
        _ => panic!("no line:column after {file}:\n{}", run.stderr),
    }
}

const HEAD: &str = "apiVersion: bundle/v1\nname: site\nversion: '1.0'\n";

#[test]
fn unknown_top_level_key_lists_the_accepted_keys() {
    let (ws, run) = lock_text(
        "m.yaml",
        format!("{HEAD}platforms: [linux/amd64]\nfile:\n  - url: https://example.org/a\n"),
    );
    assert_manifest_error(
        &ws,
        &run,
        "m.yaml:5:1",
        &[
            "unknown field `file`",
            "`apiVersion`",
            "`files`",
            "`images`",
            "`debs`",
            "`charts`",
            "`python`",
            "`mirrors`",
        ],
    );
}

#[test]
fn misspelt_key_in_a_files_entry_points_at_the_key() {
    let text = format!(
        "{HEAD}files:\n  - url: https://example.org/a\n    sha256: {HEX_A}\n  - url: https://example.org/b\n    sha265: {HEX_A}\n"
    );
    let (ws, run) = lock_text("m.yaml", text);
    assert_manifest_error(
        &ws,
        &run,
        "m.yaml:8:5",
        &[
            "files[1]",
            "unknown field `sha265`",
            "`sha256`",
            "`url`",
            "`size`",
        ],
    );
}

#[test]
fn misspelt_key_in_a_mirrors_entry() {
    let (ws, run) = lock_text(
        "m.yaml",
        format!(
            "{HEAD}mirrors:\n  - prefx: https://dl.k8s.io/\n    url: https://mirror.example.org/\n"
        ),
    );
    assert_manifest_error(
        &ws,
        &run,
        "m.yaml:5:5",
        &["mirrors[0]", "unknown field `prefx`", "`prefix`", "`url`"],
    );
}

#[test]
fn wrong_type_points_at_the_value() {
    let (ws, run) = lock_text("m.yaml", format!("{HEAD}files: 3\n"));
    assert_manifest_error(
        &ws,
        &run,
        "m.yaml:4:8",
        &["files", "invalid type", "3", "sequence"],
    );

    let (ws, run) = lock_text(
        "m.yaml",
        format!("{HEAD}files:\n  - url: https://example.org/a\n    size: big\n"),
    );
    assert_manifest_error(
        &ws,
        &run,
        "m.yaml:6:11",
        &["files[0].size", "invalid type", "big"],
    );
}

#[test]
fn missing_required_url() {
    let (ws, run) = lock_text("m.yaml", format!("{HEAD}files:\n  - sha256: {HEX_A}\n"));
    assert_manifest_error(
        &ws,
        &run,
        "m.yaml:5:5",
        &["files[0]", "missing field `url`"],
    );

    let (ws, run) = lock_text("m.yaml", "apiVersion: bundle/v1\nname: site\n");
    assert_manifest_error(&ws, &run, "m.yaml:1:1", &["missing field `version`"]);
}

#[test]
fn bad_sha256_value_points_at_the_value() {
    // The value is on line 6, column 13. (Observed: the error points at the start of
    // the entry, 5:5 — see the report; the test states what an operator needs.)
    let (ws, run) = lock_text(
        "m.yaml",
        format!("{HEAD}files:\n  - url: https://example.org/a\n    sha256: abc123\n"),
    );
    run.assert_code(2)
        .assert_stderr_contains("files[0]")
        .assert_stderr_contains("`abc123` is not a sha256 digest")
        .assert_stderr_contains("64 hex digits");
    assert_eq!(position(&run, "m.yaml"), (6, 13), "{}", run.stderr);
    assert!(!ws.path("out.lock.yaml").exists());

    // 64 characters, but not hex.
    let bad = "g".repeat(64);
    let (_ws, run) = lock_text(
        "m.yaml",
        format!("{HEAD}files:\n  - url: https://example.org/a\n    sha256: {bad}\n"),
    );
    run.assert_code(2)
        .assert_stderr_contains(&format!("`{bad}` is not a sha256 digest"));
}

#[test]
fn bad_url_is_rejected_with_its_position() {
    let (ws, run) = lock_text(
        "m.yaml",
        format!("{HEAD}files:\n  - url: ftp://example.org/a\n"),
    );
    assert_manifest_error(
        &ws,
        &run,
        "m.yaml:5:10",
        &["files[0]", "ftp://example.org/a", "only http and https"],
    );
}

#[test]
fn wrong_api_version() {
    let (ws, run) = lock_text(
        "m.yaml",
        "apiVersion: bundle/v2\nname: site\nversion: '1'\n",
    );
    assert_manifest_error(
        &ws,
        &run,
        "m.yaml:1:1",
        &["apiVersion", "bundle/v2", "bundle/v1"],
    );
}

#[test]
fn empty_manifest() {
    for text in ["", "\n\n  \n"] {
        let (ws, run) = lock_text("m.yaml", text);
        assert_manifest_error(&ws, &run, "m.yaml:1:1", &["empty", "apiVersion"]);
    }
    // Only a comment: YAML null; any position, but it must say what is expected.
    let (ws, run) = lock_text("m.yaml", "# only a comment\n");
    run.assert_code(2)
        .assert_stderr_contains("error: m.yaml:")
        .assert_stderr_contains("apiVersion");
    assert!(!ws.path("out.lock.yaml").exists());
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let (ws, run) = lock_text(
        "m.yaml",
        format!("{HEAD}files:\n  - url: \"https://example.org/a\n"),
    );
    run.assert_code(2);
    let (line, _) = position(&run, "m.yaml");
    assert!((5..=6).contains(&line), "{}", run.stderr);
    assert!(!ws.path("out.lock.yaml").exists());

    let (_ws, run) = lock_text("m.yaml", "- just\n- a list\n");
    run.assert_code(2)
        .assert_stderr_contains("error: m.yaml:1:1: ");
}

#[test]
fn json_manifest_without_files_locks() {
    let ws = Workspace::new();
    ws.write(
        "m.json",
        r#"{"apiVersion": "bundle/v1", "name": "site", "version": "1.0", "files": []}"#,
    );
    lock(&ws, "m.json").assert_ok();
    let out = std::fs::read_to_string(ws.path("out.lock.yaml")).unwrap();
    assert!(out.contains("apiVersion: bundle/v1"), "{out}");
    assert!(out.contains("name: site"), "{out}");
}

#[test]
fn json_manifest_with_a_pinned_file_locks_and_creates_offline() {
    // The file is pre-seeded in the content-addressed cache (src/fetch/cache.rs:
    // sha256/<hex>), so neither command has to reach the (unreachable) URL.
    let ws = Workspace::new();
    let data = b"#!/bin/sh\necho pinned\n".repeat(100);
    let digest = sha256_bytes(&data);
    ws.write(format!("cache/sha256/{digest}"), &data);
    let url = format!("http://127.0.0.1:{}/bin/tool.sh", free_port());
    ws.write(
        "m.json",
        format!(
            "{{\n  \"apiVersion\": \"bundle/v1\",\n  \"name\": \"site\",\n  \"version\": \"1.0\",\n  \"files\": [\n    {{\"url\": \"{url}\", \"sha256\": \"{digest}\", \"size\": {}}}\n  ]\n}}\n",
            data.len()
        ),
    );
    lock(&ws, "m.json").assert_ok();
    let out = std::fs::read_to_string(ws.path("out.lock.yaml")).unwrap();
    assert!(out.contains(&url) && out.contains(&digest), "{out}");

    create(&ws, "m.json").assert_ok();
    run_bundle_in(
        ws.root(),
        &["verify", "out.bundle.tar.zst", "--pubkey", "site.pub"],
        &[],
    )
    .assert_ok();
}

#[test]
fn json_manifest_with_an_unknown_key_has_line_and_column() {
    let text = "{\n  \"apiVersion\": \"bundle/v1\",\n  \"name\": \"site\",\n  \"version\": \"1.0\",\n  \"fils\": []\n}\n";
    let (ws, run) = lock_text("m.json", text);
    run.assert_code(2)
        .assert_stderr_contains("unknown field `fils`")
        .assert_stderr_contains("`files`")
        .assert_stderr_contains("`images`");
    let (line, column) = position(&run, "m.json");
    assert_eq!(line, 5, "{}", run.stderr);
    // serde_json reports the end of the key; anywhere on the key is fine.
    assert!((3..=9).contains(&column), "{}", run.stderr);
    assert!(!ws.path("out.lock.yaml").exists());

    // Invalid JSON syntax: still file:line:column.
    let (_ws, run) = lock_text("m.json", "{\n  \"apiVersion\": \"bundle/v1\",\n  oops\n}\n");
    run.assert_code(2);
    assert_eq!(position(&run, "m.json").0, 3, "{}", run.stderr);
}

#[test]
fn non_utf8_manifest_points_at_the_bad_byte() {
    // The bad byte is on line 2, column 8. (Observed: 1:1 with a byte offset — see the
    // report.)
    let mut text = b"apiVersion: bundle/v1\nname: s".to_vec();
    text.extend_from_slice(&[0xff, 0xfe]);
    text.extend_from_slice(b"\nversion: '1'\n");
    let (ws, run) = lock_text("m.yaml", &text);
    run.assert_code(2).assert_stderr_contains("UTF-8");
    assert_eq!(position(&run, "m.yaml"), (2, 8), "{}", run.stderr);
    assert!(!ws.path("out.lock.yaml").exists());

    // Latin-1 JSON.
    let (_ws, run) = lock_text(
        "m.json",
        b"{\"apiVersion\": \"bundle/v1\", \"name\": \"caf\xe9\", \"version\": \"1\"}",
    );
    run.assert_code(2)
        .assert_stderr_contains("error: m.json:1:");
}

#[test]
fn utf8_byte_order_mark_is_accepted() {
    // YAML 1.2 allows a byte order mark at the start of a stream (editors on Windows
    // write one). Observed: a misleading "missing field `name`" — see the report.
    let (_ws, run) = lock_text("m.yaml", format!("\u{feff}{HEAD}files: []\n"));
    run.assert_ok();
}

#[test]
fn a_url_with_a_login_is_refused_without_echoing_the_password() {
    let (ws, run) = lock_text(
        "m.yaml",
        format!("{HEAD}files:\n  - url: https://alice:s3cret@example.org/a\n"),
    );
    run.assert_code(2)
        .assert_stderr_contains("m.yaml:5:")
        .assert_stderr_contains("https://example.org/a")
        .assert_stderr_contains("netrc");
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
    assert!(!ws.path("out.lock.yaml").exists());
}

#[test]
fn malformed_chart_entries_are_refused_before_any_download() {
    let cases = [
        (
            "{ref: 'https://example.org/charts/app:1.0'}",
            "must start with oci://",
        ),
        (
            "{ref: 'oci://example.org/charts/app'}",
            "has no :VERSION tag",
        ),
        (
            "{repo: 'https://example.org/charts', name: app}",
            "needs `repo`, `name` and `version`",
        ),
        (
            "{repo: 'https://example.org/charts', name: ../app, version: '1.0'}",
            "is not a chart name",
        ),
        (
            "{ref: 'oci://example.org/app:1', name: app}",
            "`ref` goes alone",
        ),
    ];
    for (entry, message) in cases {
        let ws = Workspace::new();
        ws.write("m.yaml", format!("{HEAD}charts:\n  - {entry}\n"));
        lock(&ws, "m.yaml")
            .assert_code(2)
            .assert_stderr_contains("charts[0]")
            .assert_stderr_contains(message);
        assert!(!ws.path("out.lock.yaml").exists());
    }
}

#[test]
fn create_refuses_an_unlocked_manifest_naming_each_unpinned_entry() {
    let ws = Workspace::new();
    let port = free_port();
    let urls: Vec<String> = (0..3)
        .map(|i| format!("http://127.0.0.1:{port}/f/file{i}.bin"))
        .collect();
    ws.write(
        "m.yaml",
        format!(
            "{HEAD}files:\n  - url: {}\n  - url: {}\n    sha256: {HEX_A}\n    size: 4\n  - url: {}\n",
            urls[0], urls[1], urls[2]
        ),
    );
    let run = create(&ws, "m.yaml");
    run.assert_code(2)
        .assert_stderr_contains("not locked")
        .assert_stderr_contains(&format!("files[0] {}", urls[0]))
        .assert_stderr_contains(&format!("files[2] {}", urls[2]))
        .assert_stderr_contains("bundle lock");
    assert!(
        !run.stderr.contains(&urls[1]),
        "the pinned entry is named as unpinned:\n{}",
        run.stderr
    );
    assert!(!ws.path("out.bundle.tar.zst").exists());
}

#[test]
fn nonexistent_manifest_names_the_path() {
    // A missing input named on the command line is a usage error (2), as for a missing bundle.
    let ws = Workspace::new();
    let run = lock(&ws, "no/such/manifest.yaml");
    run.assert_code(2)
        .assert_stderr_contains("error: ")
        .assert_stderr_contains("no/such/manifest.yaml");
    let run = create(&ws, "no/such/manifest.yaml");
    run.assert_code(2)
        .assert_stderr_contains("no/such/manifest.yaml");
    assert!(!ws.path("out.lock.yaml").exists());
    assert!(!Path::new(&ws.path("out.bundle.tar.zst")).exists());
}
