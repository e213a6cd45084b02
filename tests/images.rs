//! `lock` of images against a real `docker-registry` (issue 14, parts 1–2): a tag resolves
//! to the digest of the bytes the registry serves, a digest is checked to exist, platforms
//! are checked against an index, basic auth comes from the docker/podman auth files, and a
//! plain-HTTP registry needs `--plain-http`. Images are built offline with umoci and pushed
//! with skopeo; everything listens on 127.0.0.1.

mod common;

use std::fs;

use common::net::inspect_json;
use common::registry::{
    Registry, TokenServer, auth_file, build_image, build_image_on, create_images, entry_paths,
    images_manifest, layers, lock_images, push_two_platform_index, sh_ok,
};
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

/// `m.yaml` naming `HOST/test/app:v1` and `HOST/test/base:base`.
fn write_app_and_base_manifest(ws: &Workspace, host: &str) {
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

/// `registry_with_images`, then the registry restarted on the same storage with
/// distribution's token auth, trusting the tokens of `tokens`.
fn token_registry_with_images(ws: &Workspace, tokens: &TokenServer) -> Registry {
    drop(registry_with_images(ws, None));
    let registry =
        Registry::start_with_token_auth(&ws.path("registry"), &tokens.realm(), tokens.cert());
    // Without a token, the registry refuses and names the realm.
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-"])
        .arg(format!(
            "http://{}/v2/test/app/manifests/v1",
            registry.host()
        ))
        .output()
        .expect("run curl");
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(
        head.starts_with("HTTP/1.1 401")
            && head.contains(&format!("Bearer realm=\"{}\"", tokens.realm())),
        "the registry does not ask for a token:\n{head}"
    );
    registry
}

#[test]
fn lock_pins_tags_to_the_digest_the_registry_serves_and_is_deterministic() {
    let ws = Workspace::new();
    let registry = registry_with_images(&ws, None);
    let host = registry.host();
    write_app_and_base_manifest(&ws, &host);
    lock_images(&ws, &["--plain-http"], &[]).assert_ok();
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
    lock_images(&ws, &["--plain-http"], &[]).assert_ok();
    assert_eq!(
        fs::read(ws.path("m.lock.yaml")).unwrap(),
        first,
        "lock twice must give byte-identical output"
    );

    // The lock locks again to itself (digests are checked to exist, nothing changes).
    fs::copy(ws.path("m.lock.yaml"), ws.path("m.yaml")).unwrap();
    lock_images(&ws, &["--plain-http"], &[]).assert_ok();
    assert_eq!(fs::read(ws.path("m.lock.yaml")).unwrap(), first);
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
        lock_images(&ws, &["--plain-http"], &[])
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
    lock_images(&ws, &["--retries", "0"], &[])
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
    let auth_file = |password: &str| auth_file(&host, "alice", password);

    // No login anywhere: the registry refuses.
    lock_images(&ws, &["--plain-http"], &[])
        .assert_code(1)
        .assert_stderr_contains(&host)
        .assert_stderr_contains("authentication failed");

    // A docker config.json ($DOCKER_CONFIG) with the right password.
    ws.write("docker/config.json", auth_file("s3cret"));
    let docker = ws.path("docker");
    lock_images(
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
    let run = lock_images(
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
    lock_images(
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
    lock_images(&ws, &["--plain-http"], &[]).assert_ok();
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
    lock_images(&ws, &["--plain-http"], &[])
        .assert_code(2)
        .assert_stderr_contains("linux/arm64")
        .assert_stderr_contains("which has linux/amd64");
    assert!(!ws.path("m.lock.yaml").exists());
}

#[test]
fn a_bearer_challenge_is_answered_with_a_token_from_the_realm_for_each_repository() {
    let ws = Workspace::new();
    let tokens = TokenServer::start(&ws.path("token"), None, "token");
    let registry = token_registry_with_images(&ws, &tokens);
    let host = registry.host();
    // skopeo, another client, reads the digests through the same token flow.
    let app = registry.manifest_digest("test/app", "v1", None);
    let base = registry.manifest_digest("test/base", "base", None);
    assert!(
        !tokens.take_requests().is_empty(),
        "skopeo got the manifests without a token"
    );
    write_app_and_base_manifest(&ws, &host);
    lock_images(&ws, &["--plain-http"], &[]).assert_ok();
    assert_eq!(
        locked_refs(&ws, "m.lock.yaml"),
        [
            format!("{host}/test/app:v1@sha256:{app}"),
            format!("{host}/test/base:base@sha256:{base}"),
        ]
    );

    // The registry first refused each repository (the challenge), then served it with the
    // token.
    let get = |path: &str, status: u16| (format!("GET {path}"), status);
    assert_eq!(
        registry.access_log("airgap-bundle/"),
        [
            get("/v2/test/app/manifests/v1", 401),
            get("/v2/test/app/manifests/v1", 200),
            get("/v2/test/base/manifests/base", 401),
            get("/v2/test/base/manifests/base", 200),
        ],
        "{}",
        registry.log()
    );
    // In between, the realm was asked, without a login (there is none), for a pull token
    // of the repository's scope and the registry's service.
    let requests = tokens.take_requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    for (request, repository) in requests.iter().zip(["test/app", "test/base"]) {
        assert_eq!(request.path, "/token", "{request:?}");
        assert_eq!(
            request.params("scope"),
            [format!("repository:{repository}:pull")],
            "{request:?}"
        );
        assert_eq!(request.params("service"), ["test-registry"], "{request:?}");
        assert!(!request.authorization, "{request:?}");
        assert_eq!(request.status, 200);
    }

    // create fetches each repository's manifest and every blob with one token per
    // repository: the token is cached and reused for the blob downloads.
    keygen(&ws.path("site"));
    create_images(&ws, "b.bundle.tar.zst").assert_ok();
    let requests = tokens.take_requests();
    assert_eq!(requests.len(), 2, "one token per repository: {requests:?}");
    run_bundle_in(
        ws.root(),
        &["verify", "b.bundle.tar.zst", "--pubkey", "site.pub"],
        &[],
    )
    .assert_ok();

    // With the manifests in the cache but the layers gone, no manifest request earns a
    // token: each layer download is refused (401), renews the repository's token through
    // the challenge, and goes on (not counted as a retry: --retries 0).
    let mut removed = 0;
    for entry in std::fs::read_dir(ws.path("cache/sha256")).unwrap() {
        let path = entry.unwrap().path();
        if std::fs::read(&path).unwrap().first() != Some(&b'{') {
            std::fs::remove_file(&path).unwrap();
            removed += 1;
        }
    }
    assert!(removed >= 2, "no layer in the cache to remove");
    create_images(&ws, "again.bundle.tar.zst").assert_ok();
    assert_eq!(
        sha256_file(ws.path("again.bundle.tar.zst")),
        sha256_file(ws.path("b.bundle.tar.zst"))
    );
    let renewed = tokens.take_requests();
    assert!(
        !renewed.is_empty() && renewed.iter().all(|r| r.status == 200),
        "the layer downloads did not renew a token: {renewed:?}"
    );
}

#[test]
fn a_token_service_that_wants_a_login_gets_the_registrys_login_from_the_auth_file() {
    let ws = Workspace::new();
    // This one answers `access_token` (not `token`).
    let tokens = TokenServer::start(&ws.path("token"), Some(("alice", "s3cret")), "access_token");
    let registry = token_registry_with_images(&ws, &tokens);
    let host = registry.host();
    let expected = format!(
        "{host}/test/app:v1@sha256:{}",
        registry.manifest_digest("test/app", "v1", Some("alice:s3cret"))
    );
    tokens.take_requests();
    ws.write(
        "m.yaml",
        images_manifest(&[format!("{host}/test/app:v1")], ""),
    );
    let scope_and_service = |request: &common::registry::TokenRequest| {
        assert_eq!(request.path, "/token", "{request:?}");
        assert_eq!(request.params("scope"), ["repository:test/app:pull"]);
        assert_eq!(request.params("service"), ["test-registry"]);
    };

    // No login anywhere: the token service refuses.
    lock_images(&ws, &["--plain-http"], &[])
        .assert_code(1)
        .assert_stderr_contains("authentication failed");
    assert!(!ws.path("m.lock.yaml").exists());
    let requests = tokens.take_requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    scope_and_service(&requests[0]);
    assert!(!requests[0].authorization);
    assert_eq!(requests[0].status, 401);

    // The registry's login in $DOCKER_CONFIG/config.json goes to its token service.
    ws.write("docker/config.json", auth_file(&host, "alice", "s3cret"));
    let docker = ws.path("docker");
    let docker_config = ("DOCKER_CONFIG", docker.to_str().unwrap());
    let run = lock_images(&ws, &["--plain-http"], &[docker_config]);
    run.assert_ok();
    assert!(!run.stderr.contains("s3cret"));
    assert_eq!(locked_refs(&ws, "m.lock.yaml"), [expected]);
    fs::remove_file(ws.path("m.lock.yaml")).unwrap();
    let requests = tokens.take_requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    scope_and_service(&requests[0]);
    assert_eq!(requests[0].user.as_deref(), Some("alice"));
    assert_eq!(requests[0].status, 200);
    assert_eq!(
        registry.access_log("airgap-bundle/")[1..],
        [
            ("GET /v2/test/app/manifests/v1".to_string(), 401),
            ("GET /v2/test/app/manifests/v1".to_string(), 200),
        ],
        "{}",
        registry.log()
    );

    // A wrong password: refused, and never printed.
    ws.write("docker/config.json", auth_file(&host, "alice", "wrong"));
    let run = lock_images(&ws, &["--plain-http"], &[docker_config]);
    run.assert_code(1)
        .assert_stderr_contains("authentication failed");
    assert!(!run.stderr.contains("wrong"));
    assert!(!ws.path("m.lock.yaml").exists());
    let requests = tokens.take_requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    scope_and_service(&requests[0]);
    assert_eq!(requests[0].user.as_deref(), Some("alice"));
    assert_eq!(requests[0].status, 401);
}

// ---------------------------------------------------------------------------
// create: images into the bundle's OCI layout
// ---------------------------------------------------------------------------

#[test]
fn create_carries_images_in_an_oci_layout_that_skopeo_reads_sharing_layers_once() {
    let ws = Workspace::new();
    keygen(&ws.path("site"));
    let registry = Registry::start(&ws.path("registry"), None);
    let host = registry.host();
    let layout = ws.path("oci");
    build_image(&layout, "base", "base\n");
    build_image_on(&layout, Some("base"), "v1", "app\n");
    registry.push(&layout, "base", "test/base", None);
    registry.push(&layout, "v1", "test/app", None);
    let app_raw = registry.raw_manifest("test/app", "v1");
    let base_raw = registry.raw_manifest("test/base", "base");
    let shared: Vec<String> = layers(&base_raw)
        .into_iter()
        .filter(|l| layers(&app_raw).contains(l))
        .collect();
    assert_eq!(shared.len(), 1, "the app image must share the base layer");

    write_app_and_base_manifest(&ws, &host);
    lock_images(&ws, &["--plain-http"], &[]).assert_ok();
    create_images(&ws, "b.bundle.tar.zst").assert_ok();
    run_bundle_in(
        ws.root(),
        &["verify", "b.bundle.tar.zst", "--pubkey", "site.pub"],
        &[],
    )
    .assert_ok();

    // Two image artifacts; the shared layer is one entry that belongs to both.
    let report = inspect_json(&ws, "b.bundle.tar.zst");
    let images: Vec<&serde_json::Value> = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "image")
        .collect();
    assert_eq!(images.len(), 2, "{report:#}");
    let shared_path = format!("oci/blobs/sha256/{}", shared[0]);
    for image in &images {
        assert!(
            image["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == shared_path.as_str()),
            "{image:#}"
        );
    }
    let paths = entry_paths(&report);
    assert_eq!(
        paths.iter().filter(|p| **p == shared_path).count(),
        1,
        "{paths:?}"
    );
    assert!(paths.contains(&"oci/index.json".to_string()));

    // After tar -x, stock skopeo reads the layout and copies it into another registry with
    // the upstream digests.
    let out = ws.mkdir("extracted");
    sh_ok(&format!(
        "zstd -dc {} | tar -x -C {}",
        ws.path("b.bundle.tar.zst").display(),
        out.display()
    ));
    let site = Registry::start(&ws.path("site-registry"), None);
    for (repo, tag, raw) in [
        ("test/app", "v1", &app_raw),
        ("test/base", "base", &base_raw),
    ] {
        let name = format!("{host}/{repo}:{tag}");
        let carried = sh_ok(&format!(
            "skopeo inspect --raw 'oci:{}/oci:{name}'",
            out.display()
        ));
        assert_eq!(sha256_bytes(&carried), sha256_bytes(raw), "{name}");
        sh_ok(&format!(
            "skopeo copy --quiet --dest-tls-verify=false 'oci:{}/oci:{name}' docker://{}/{repo}:{tag}",
            out.display(),
            site.host()
        ));
        assert_eq!(
            site.manifest_digest(repo, tag, None),
            sha256_bytes(raw),
            "{repo}:{tag} in the site registry"
        );
    }

    // A second create needs no registry: everything comes from the cache, byte-identical.
    drop(registry);
    create_images(&ws, "again.bundle.tar.zst").assert_ok();
    assert_eq!(
        sha256_file(ws.path("again.bundle.tar.zst")),
        sha256_file(ws.path("b.bundle.tar.zst"))
    );

    // Without --registry or --oci-dir, install refuses a bundle with images whole, writing nothing.
    let web = ws.mkdir("www");
    run_bundle_in(
        ws.root(),
        &[
            "install",
            "b.bundle.tar.zst",
            "--pubkey",
            "site.pub",
            "--web-root",
            web.to_str().unwrap(),
        ],
        &[],
    )
    .assert_code(2)
    .assert_stderr_contains("2 image(s)")
    .assert_stderr_contains("nothing was installed");
    assert!(tree_snapshot(&web).is_empty());
}

#[test]
fn platforms_filter_an_index_and_the_carried_index_has_its_own_digest() {
    let ws = Workspace::new();
    keygen(&ws.path("site"));
    let registry = Registry::start(&ws.path("registry"), None);
    let host = registry.host();
    let layout = ws.path("oci");
    let multi = push_two_platform_index(&registry, &layout, "test/multi", "v1");
    let (amd, arm) = (multi.amd.as_slice(), multi.arm.as_slice());
    let upstream = multi.digest();
    let reference = format!("{host}/test/multi:v1");

    for (platforms, expect_filtered) in [("platforms: [linux/amd64]\n", true), ("", false)] {
        ws.write(
            "m.yaml",
            images_manifest(std::slice::from_ref(&reference), platforms),
        );
        lock_images(&ws, &["--plain-http"], &[]).assert_ok();
        create_images(&ws, "b.bundle.tar.zst").assert_ok();
        let report = inspect_json(&ws, "b.bundle.tar.zst");
        let image = &report["artifacts"][0];
        assert_eq!(image["kind"], "image", "{report:#}");
        assert_eq!(image["source"], format!("{reference}@sha256:{upstream}"));
        let paths = entry_paths(&report);
        let has = |hex: &str| paths.contains(&format!("oci/blobs/sha256/{hex}"));
        assert!(has(&sha256_bytes(amd)) && has(&layers(amd)[0]), "{paths:?}");
        let text = run_bundle_in(ws.root(), &["inspect", "b.bundle.tar.zst"], &[]);
        text.assert_ok()
            .assert_stdout_contains(&format!("{reference}@sha256:{upstream}"))
            .assert_stdout_contains(&format!(
                "carried as sha256:{}",
                image["sha256"].as_str().unwrap()
            ));
        if expect_filtered {
            let carried = image["sha256"].as_str().unwrap();
            assert_ne!(carried, upstream, "a filtered index has its own digest");
            assert!(has(carried));
            assert!(
                !has(&sha256_bytes(arm)) && !has(&layers(arm)[0]),
                "arm64 content carried: {paths:?}"
            );
        } else {
            assert_eq!(image["sha256"], upstream.as_str());
            assert!(has(&upstream) && has(&layers(arm)[0]), "{paths:?}");
        }
        fs::remove_file(ws.path("b.bundle.tar.zst")).unwrap();
    }
}

/// A site key, a registry with the test images and `m.lock.yaml` locking `test/app:v1`.
fn app_locked(ws: &Workspace) -> (Registry, String) {
    keygen(&ws.path("site"));
    let registry = registry_with_images(ws, None);
    let host = registry.host();
    ws.write(
        "m.yaml",
        images_manifest(&[format!("{host}/test/app:v1")], ""),
    );
    lock_images(ws, &["--plain-http"], &[]).assert_ok();
    (registry, host)
}

#[test]
fn a_blob_the_registry_serves_damaged_is_exit_3_naming_image_and_blob() {
    let ws = Workspace::new();
    let (registry, host) = app_locked(&ws);
    let layer = layers(&registry.raw_manifest("test/app", "v1"))[0].clone();
    let file = registry.blob_file(&layer);
    let mut bytes = fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&file, bytes).unwrap();

    create_images(&ws, "b.bundle.tar.zst")
        .assert_code(3)
        .assert_stderr_contains(&format!("{host}/test/app:v1"))
        .assert_stderr_contains(&layer);
    assert!(!ws.path("b.bundle.tar.zst").exists());
    assert!(!ws.path(format!("cache/sha256/{layer}")).exists());
}

#[test]
fn a_manifest_the_registry_serves_changed_is_exit_3_and_an_unlocked_ref_is_exit_2() {
    let ws = Workspace::new();
    let (registry, host) = app_locked(&ws);
    let digest = registry.manifest_digest("test/app", "v1", None);

    // A lock whose image lost its digest is not a lock.
    let locked = fs::read_to_string(ws.path("m.lock.yaml")).unwrap();
    let unpinned = locked.replace(&format!("@sha256:{digest}"), "");
    assert_ne!(unpinned, locked);
    ws.write("unpinned.lock.yaml", &unpinned);
    run_bundle_in(
        ws.root(),
        &[
            "create",
            "unpinned.lock.yaml",
            "-o",
            "u.bundle.tar.zst",
            "--key",
            "site.key",
            "--plain-http",
        ],
        &[("HOME", ws.root().to_str().unwrap())],
    )
    .assert_code(2)
    .assert_stderr_contains(&format!("{host}/test/app:v1"));
    assert!(!ws.path("u.bundle.tar.zst").exists());

    // The registry's stored manifest changes under its digest (one byte of whitespace):
    // fetched by digest with an empty cache, the bytes do not hash to it.
    let file = registry.blob_file(&digest);
    let mut bytes = fs::read(&file).unwrap();
    bytes.push(b'\n');
    fs::write(&file, bytes).unwrap();
    fs::remove_dir_all(ws.path("cache")).unwrap();
    create_images(&ws, "b.bundle.tar.zst")
        .assert_code(3)
        .assert_stderr_contains(&format!("{host}/test/app:v1"))
        .assert_stderr_contains(&digest);
    assert!(!ws.path("b.bundle.tar.zst").exists());
}

#[test]
fn an_image_listed_twice_is_refused_at_lock_and_create() {
    let ws = Workspace::new();
    keygen(&ws.path("site"));
    let registry = registry_with_images(&ws, None);
    let reference = format!("{}/test/app:v1", registry.host());
    ws.write(
        "m.yaml",
        images_manifest(&[reference.clone(), reference.clone()], ""),
    );
    lock_images(&ws, &["--plain-http"], &[])
        .assert_code(2)
        .assert_stderr_contains("both named")
        .assert_stderr_contains(&reference);
    assert!(!ws.path("m.lock.yaml").exists());
    fs::copy(ws.path("m.yaml"), ws.path("m.lock.yaml")).unwrap();
    create_images(&ws, "b.bundle.tar.zst")
        .assert_code(2)
        .assert_stderr_contains("both named");
    assert!(!ws.path("b.bundle.tar.zst").exists());
}
