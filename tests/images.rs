//! `lock` of images against a real `docker-registry` (issue 14, parts 1–2): a tag resolves
//! to the digest of the bytes the registry serves, a digest is checked to exist, platforms
//! are checked against an index, basic auth comes from the docker/podman auth files, and a
//! plain-HTTP registry needs `--plain-http`. Images are built offline with umoci and pushed
//! with skopeo; everything listens on 127.0.0.1.

mod common;

use std::fs;

use base64::Engine as _;
use common::registry::{Registry, build_image};
use common::*;

/// The `ref` values of a lock's `images`, in order.
fn locked_refs(ws: &Workspace, lock: &str) -> Vec<String> {
    let text = fs::read_to_string(ws.path(lock)).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    doc["images"]
        .as_sequence()
        .unwrap_or_else(|| panic!("no images in the lock:\n{text}"))
        .iter()
        .map(|i| i["ref"].as_str().unwrap().to_string())
        .collect()
}

fn images_manifest(refs: &[String], extra: &str) -> String {
    let mut m = String::from("apiVersion: bundle/v1\nname: images\nversion: '1.0'\nimages:\n");
    for r in refs {
        m.push_str(&format!("  - ref: '{r}'\n"));
    }
    m.push_str(extra);
    m
}

fn lock(ws: &Workspace, extra: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut args = vec!["lock", "m.yaml", "-o", "m.lock.yaml", "--cache", "cache"];
    args.extend_from_slice(extra);
    // No auth file of the machine's user may leak into a test.
    let mut all = vec![("HOME", ws.root().to_str().unwrap())];
    all.extend_from_slice(envs);
    run_bundle_in(ws.root(), &args, &all)
}

/// One registry with `test/app:v1` and `test/base:v1` pushed.
fn registry_with_images(ws: &Workspace, login: Option<(&str, &str)>) -> Registry {
    let registry = Registry::start(&ws.path("registry"), login);
    let layout = ws.path("oci");
    build_image(&layout, "v1", "app\n");
    let creds = login.map(|(u, p)| format!("{u}:{p}"));
    registry.push(&layout, "v1", "test/app", creds.as_deref());
    build_image(&layout, "base", "base\n");
    registry.push(&layout, "base", "test/base", creds.as_deref());
    registry
}

#[test]
fn lock_pins_tags_to_the_digest_the_registry_serves_and_is_deterministic() {
    let ws = Workspace::new();
    let registry = registry_with_images(&ws, None);
    let host = registry.host();
    ws.write(
        "m.yaml",
        images_manifest(
            &[
                format!("{host}/test/app:v1"),
                format!("{host}/test/base:base"),
            ],
            "",
        ),
    );
    lock(&ws, &["--plain-http"], &[]).assert_ok();
    let app = registry.manifest_digest("test/app", "v1", None);
    let base = registry.manifest_digest("test/base", "base", None);
    assert_eq!(
        locked_refs(&ws, "m.lock.yaml"),
        [
            format!("{host}/test/app:v1@sha256:{app}"),
            format!("{host}/test/base:base@sha256:{base}"),
        ]
    );
    let first = fs::read(ws.path("m.lock.yaml")).unwrap();
    lock(&ws, &["--plain-http"], &[]).assert_ok();
    assert_eq!(
        fs::read(ws.path("m.lock.yaml")).unwrap(),
        first,
        "lock twice must give byte-identical output"
    );

    // The lock locks again to itself (digests are checked to exist, nothing changes).
    fs::copy(ws.path("m.lock.yaml"), ws.path("m.yaml")).unwrap();
    lock(&ws, &["--plain-http"], &[]).assert_ok();
    assert_eq!(fs::read(ws.path("m.lock.yaml")).unwrap(), first);

    // `create` does not bundle images yet: it says so (exit 2).
    keygen(&ws.path("site"));
    run_bundle_in(
        ws.root(),
        &[
            "create",
            "m.lock.yaml",
            "-o",
            "b.bundle.tar.zst",
            "--key",
            "site.key",
        ],
        &[],
    )
    .assert_code(2)
    .assert_stderr_contains("images")
    .assert_stderr_contains("cannot carry yet");
}

#[test]
fn a_digest_that_is_not_in_the_registry_and_a_missing_tag_are_exit_1() {
    let ws = Workspace::new();
    let registry = registry_with_images(&ws, None);
    let host = registry.host();
    let absent = sha256_bytes(b"not a manifest");
    for reference in [
        format!("{host}/test/app@sha256:{absent}"),
        format!("{host}/test/app:v9"),
        format!("{host}/test/nothing:v1"),
    ] {
        ws.write(
            "m.yaml",
            images_manifest(std::slice::from_ref(&reference), ""),
        );
        lock(&ws, &["--plain-http"], &[])
            .assert_code(1)
            .assert_stderr_contains(&reference)
            .assert_stderr_contains("not found")
            .assert_stderr_contains("hint:");
        assert!(!ws.path("m.lock.yaml").exists());
    }
}

#[test]
fn a_plain_http_registry_without_plain_http_is_exit_1_with_a_hint() {
    let ws = Workspace::new();
    let registry = registry_with_images(&ws, None);
    ws.write(
        "m.yaml",
        images_manifest(&[format!("{}/test/app:v1", registry.host())], ""),
    );
    lock(&ws, &["--retries", "0"], &[])
        .assert_code(1)
        .assert_stderr_contains("--plain-http");
    assert!(!ws.path("m.lock.yaml").exists());
}

#[test]
fn basic_auth_comes_from_the_auth_files_and_a_wrong_password_is_exit_1() {
    let ws = Workspace::new();
    let registry = registry_with_images(&ws, Some(("alice", "s3cret")));
    let host = registry.host();
    ws.write(
        "m.yaml",
        images_manifest(&[format!("{host}/test/app:v1")], ""),
    );
    let expected = format!(
        "{host}/test/app:v1@sha256:{}",
        registry.manifest_digest("test/app", "v1", Some("alice:s3cret"))
    );
    let auth_file = |password: &str| {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("alice:{password}"));
        format!("{{\"auths\": {{\"{host}\": {{\"auth\": \"{auth}\"}}}}}}")
    };

    // No login anywhere: the registry refuses.
    lock(&ws, &["--plain-http"], &[])
        .assert_code(1)
        .assert_stderr_contains(&host)
        .assert_stderr_contains("authentication failed");

    // A docker config.json ($DOCKER_CONFIG) with the right password.
    ws.write("docker/config.json", auth_file("s3cret"));
    let docker = ws.path("docker");
    lock(
        &ws,
        &["--plain-http"],
        &[("DOCKER_CONFIG", docker.to_str().unwrap())],
    )
    .assert_ok();
    assert_eq!(locked_refs(&ws, "m.lock.yaml"), [expected]);
    fs::remove_file(ws.path("m.lock.yaml")).unwrap();

    // A containers auth.json ($REGISTRY_AUTH_FILE) wins over it: with a wrong password
    // the registry refuses, naming it, and the password is never printed.
    let auth = ws.write("auth.json", auth_file("wrong"));
    let run = lock(
        &ws,
        &["--plain-http"],
        &[
            ("DOCKER_CONFIG", docker.to_str().unwrap()),
            ("REGISTRY_AUTH_FILE", auth.to_str().unwrap()),
        ],
    );
    run.assert_code(1)
        .assert_stderr_contains(&host)
        .assert_stderr_contains("authentication failed");
    assert!(!run.stderr.contains("wrong") && !run.stderr.contains("s3cret"));
    assert!(!ws.path("m.lock.yaml").exists());

    // A malformed auth file is a clear usage error naming it.
    let bad = ws.write("bad.json", "{not json");
    lock(
        &ws,
        &["--plain-http"],
        &[("REGISTRY_AUTH_FILE", bad.to_str().unwrap())],
    )
    .assert_code(2)
    .assert_stderr_contains("bad.json");
}

#[test]
fn platforms_are_checked_against_an_image_index() {
    let ws = Workspace::new();
    let registry = registry_with_images(&ws, None);
    let host = registry.host();
    // An OCI index with one linux/amd64 entry: the app image.
    let app = registry.manifest_digest("test/app", "v1", None);
    let app_size = {
        let out = std::process::Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{host}/test/app:v1"),
            ])
            .output()
            .unwrap();
        out.stdout.len()
    };
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:{app}\",\"size\":{app_size},\"platform\":{{\"architecture\":\"amd64\",\"os\":\"linux\"}}}}]}}"
    );
    registry.put_manifest(
        "test/app",
        "multi",
        "application/vnd.oci.image.index.v1+json",
        index.as_bytes(),
    );
    let reference = format!("{host}/test/app:multi");

    ws.write(
        "m.yaml",
        images_manifest(
            std::slice::from_ref(&reference),
            "platforms: [linux/amd64]\n",
        ),
    );
    lock(&ws, &["--plain-http"], &[]).assert_ok();
    assert_eq!(
        locked_refs(&ws, "m.lock.yaml"),
        [format!(
            "{reference}@sha256:{}",
            sha256_bytes(index.as_bytes())
        )]
    );
    fs::remove_file(ws.path("m.lock.yaml")).unwrap();

    ws.write(
        "m.yaml",
        format!(
            "apiVersion: bundle/v1\nname: images\nversion: '1.0'\nimages:\n  - ref: '{reference}'\n    platforms: [linux/arm64, linux/amd64]\n"
        ),
    );
    lock(&ws, &["--plain-http"], &[])
        .assert_code(2)
        .assert_stderr_contains("linux/arm64")
        .assert_stderr_contains("which has linux/amd64");
    assert!(!ws.path("m.lock.yaml").exists());
}
