//! Python packages against hostile input (issue 16, review): an upstream simple repository
//! whose pages lie (a wheel of another project listed under this one, absurd sizes), a
//! requirements file whose markers would exhaust the stack, and an existing web-root page
//! that this tool cannot merge. Real wheels come from the fixture's stock `pip download`;
//! the hostile pages are written here and served by apache2 on 127.0.0.1.

mod common;

use std::fs;
use std::path::Path;

use common::net::{create, lock, site_keygen};
use common::pypi::{self, Api, PyIndex};
use common::*;

const HEAD: &str = "apiVersion: bundle/v1\nversion: 1.0.0\n";

/// An upstream repository on 127.0.0.1 serving `packages/<file>` (copies of the fixture's
/// wheels, under the names given) and each `(project, page)` as `simple/<project>/`: HTML,
/// or PEP 691 JSON when the page starts with `{`.
fn hostile_index(
    ws: &Workspace,
    dir: &str,
    files: &[(&str, &str)],
    pages: &[(&str, String)],
) -> Apache {
    let root = ws.mkdir(dir);
    fs::create_dir_all(root.join("packages")).unwrap();
    for (cached, served) in files {
        fs::copy(
            pypi::cached_wheels().join(cached),
            root.join("packages").join(served),
        )
        .unwrap();
    }
    for (project, page) in pages {
        let dir = root.join("simple").join(project);
        fs::create_dir_all(&dir).unwrap();
        let name = if page.starts_with('{') {
            "index.json"
        } else {
            "index.html"
        };
        fs::write(dir.join(name), page).unwrap();
    }
    let extra = format!(
        "<Directory \"{}\">\nDirectoryIndex index.json index.html\nAddType application/vnd.pypi.simple.v1+json .json\n</Directory>\n",
        root.canonicalize().unwrap().join("simple").display()
    );
    Apache::start_with_config(&root, &extra)
}

fn section(index: &Apache, packages: &str) -> String {
    format!(
        "python:\n  index: {}\n  python-version: '3.11'\n  platforms: [manylinux2014_x86_64]\n{packages}",
        index.url("simple")
    )
}

fn install(ws: &Workspace, bundle: &str, www: &Path) -> Run {
    run_bundle_in(
        ws.root(),
        &[
            "install",
            bundle,
            "--pubkey",
            "site.pub",
            "--web-root",
            www.to_str().unwrap(),
            "--base-url",
            "http://web.local/",
        ],
        &[],
    )
}

#[test]
fn a_wheel_of_another_project_is_never_locked_under_this_ones_name() {
    let ws = Workspace::new();
    let six = sha256_file(pypi::cached_wheels().join(pypi::SIX));
    let jmespath = sha256_file(pypi::cached_wheels().join(pypi::JMESPATH));
    let other = "evil-1.16.0-py2.py3-none-any.whl";
    // six's page lists only a wheel of project `evil` with six's version.
    let index = hostile_index(
        &ws,
        "up",
        &[(pypi::SIX, other)],
        &[(
            "six",
            format!(
                "<html><body><a href=\"../../packages/{other}#sha256={six}\">{other}</a></body></html>\n"
            ),
        )],
    );
    ws.write(
        "named.yaml",
        format!(
            "{HEAD}name: named\n{}",
            section(&index, "  packages:\n    - {name: six, version: 1.16.0}\n")
        ),
    );
    lock(&ws, "named.yaml", "named.lock.yaml", "cache", &[])
        .assert_code(2)
        .assert_stderr_contains("six==1.16.0: version 1.16.0 is not in the index");
    assert!(!ws.path("named.lock.yaml").exists());

    // A `{name, url}` entry whose file is another project's wheel.
    ws.write(
        "url.yaml",
        format!(
            "{HEAD}name: url\npython:\n  packages:\n    - {{name: six, url: {}, sha256: {jmespath}}}\n",
            index.url(&format!("packages/{}", pypi::JMESPATH))
        ),
    );
    lock(&ws, "url.yaml", "url.lock.yaml", "cache", &[])
        .assert_code(2)
        .assert_stderr_contains(pypi::JMESPATH)
        .assert_stderr_contains("`six`");
    assert!(!ws.path("url.lock.yaml").exists());

    // A hand-written lock that files another project's wheel under six: create refuses.
    ws.write(
        "hand.lock.yaml",
        format!(
            "{HEAD}name: hand\npython:\n  packages:\n    - {{name: six, version: 1.0.1, filename: {}, url: {}, sha256: {jmespath}}}\n",
            pypi::JMESPATH,
            index.url(&format!("packages/{}", pypi::JMESPATH))
        ),
    );
    site_keygen(&ws);
    create(&ws, "hand.lock.yaml", "hand.bundle.tar.zst", "cache", &[])
        .assert_code(2)
        .assert_stderr_contains(pypi::JMESPATH)
        .assert_stderr_contains("`six`");
    assert!(!ws.path("hand.bundle.tar.zst").exists());
}

#[test]
fn a_json_page_lying_about_sizes_is_exit_3_at_create_not_a_crash() {
    let ws = Workspace::new();
    let page = |file: &str, project: &'static str| {
        let sha = sha256_file(pypi::cached_wheels().join(file));
        (
            project,
            serde_json::json!({
                "meta": {"api-version": "1.1"},
                "name": project,
                "files": [{
                    "filename": file,
                    "url": format!("../../packages/{file}"),
                    "hashes": {"sha256": sha},
                    "size": u64::MAX,
                }],
            })
            .to_string(),
        )
    };
    let index = hostile_index(
        &ws,
        "up",
        &[(pypi::SIX, pypi::SIX), (pypi::JMESPATH, pypi::JMESPATH)],
        &[page(pypi::SIX, "six"), page(pypi::JMESPATH, "jmespath")],
    );
    ws.write(
        "m.yaml",
        format!(
            "{HEAD}name: m\n{}",
            section(
                &index,
                "  packages:\n    - {name: six, version: 1.16.0}\n    - {name: jmespath, version: 1.0.1}\n"
            )
        ),
    );
    lock(&ws, "m.yaml", "m.lock.yaml", "cache", &[]).assert_ok();
    site_keygen(&ws);
    create(&ws, "m.lock.yaml", "m.bundle.tar.zst", "cache", &[])
        .assert_code(3)
        .assert_stderr_contains(&format!("size mismatch: the lock pins {} bytes", u64::MAX));
    assert!(!ws.path("m.bundle.tar.zst").exists());
}

#[test]
fn a_requirements_line_nested_beyond_reason_is_exit_2_naming_the_line() {
    let ws = Workspace::new();
    let index = PyIndex::build(&ws, "up", Api::Html, &[pypi::SIX]);
    let six = sha256_file(pypi::cached_wheels().join(pypi::SIX));
    let depth = 200_000;
    ws.write(
        "req.txt",
        format!(
            "# pinned\nsix==1.16.0 ; {}python_version > '3'{} --hash=sha256:{six}\n",
            "(".repeat(depth),
            ")".repeat(depth)
        ),
    );
    ws.write(
        "m.yaml",
        format!(
            "{HEAD}name: m\n{}",
            section(&index.apache, "  requirements: req.txt\n")
        ),
    );
    lock(&ws, "m.yaml", "m.lock.yaml", "cache", &[])
        .assert_code(2)
        .assert_stderr_contains("req.txt:2:");
    assert!(!ws.path("m.lock.yaml").exists());
}

/// Locks and bundles six from the fixture's upstream as `six.bundle.tar.zst`.
fn six_bundle(ws: &Workspace) {
    let index = PyIndex::build(ws, "up", Api::Html, &[pypi::SIX]);
    ws.write(
        "six.yaml",
        format!(
            "{HEAD}name: six\n{}",
            section(
                &index.apache,
                "  packages:\n    - {name: six, version: 1.16.0}\n"
            )
        ),
    );
    lock(ws, "six.yaml", "six.lock.yaml", "cache", &[]).assert_ok();
    site_keygen(ws);
    create(ws, "six.lock.yaml", "six.bundle.tar.zst", "cache", &[]).assert_ok();
}

#[test]
fn an_existing_page_too_large_to_merge_is_refused_before_anything_moves() {
    let ws = Workspace::new();
    six_bundle(&ws);
    let www = ws.mkdir("www");
    // An earlier listing, padded past what the install reads: merging none of it would
    // drop what it lists.
    let mut page = String::from(
        "<html><body><a href=\"../../python/six-1.15.0-py2.py3-none-any.whl\">six-1.15.0-py2.py3-none-any.whl</a>\n<!--",
    );
    page.push_str(&"x".repeat(17 << 20));
    page.push_str("--></body></html>\n");
    ws.write("www/simple/six/index.html", &page);
    let before = tree_snapshot(&www);
    install(&ws, "six.bundle.tar.zst", &www)
        .assert_code(1)
        .assert_stderr_contains("simple/six/index.html");
    assert_eq!(tree_snapshot(&www), before);
}

#[test]
fn a_planted_page_cannot_point_pip_elsewhere_or_inject_markup() {
    let ws = Workspace::new();
    six_bundle(&ws);
    let www = ws.mkdir("www");
    let sha = "ab".repeat(32);
    ws.write(
        "www/simple/six/index.html",
        format!(
            "<html><head><base href=\"http://evil.example/x/\"></head><body>\n\
             <a href=\"http://evil.example/python/six-1.15.0.tar.gz#sha256={sha}\" data-requires-python='\"&gt;&lt;script&gt;x'>a</a>\n\
             <a href=\"javascript:alert(1)\">b</a>\n\
             <a href=\"file:///etc/passwd\">c</a>\n\
             <a href=\"../../python/..%2F..%2Fetc%2Fpasswd\">d</a>\n\
             <a href=\"../../python/%3Cscript%3E-1.0.tar.gz\" onclick=\"x\">e</a>\n\
             </body></html>\n"
        ),
    );
    install(&ws, "six.bundle.tar.zst", &www).assert_ok();
    let merged = fs::read_to_string(www.join("simple/six/index.html")).unwrap();
    assert!(
        !merged.contains("evil") && !merged.contains("javascript") && !merged.contains("file:"),
        "{merged}"
    );
    assert!(
        !merged.contains("<script") && !merged.contains("onclick") && !merged.contains("<base"),
        "{merged}"
    );
    for line in merged.lines().filter(|l| l.contains("<a ")) {
        assert!(
            line.trim_start().starts_with("<a href=\"../../python/"),
            "{line}"
        );
    }
    assert!(merged.contains(pypi::SIX), "{merged}");
    // A second install leaves the merged page as it is.
    let before = tree_snapshot(&www);
    install(&ws, "six.bundle.tar.zst", &www).assert_ok();
    let after = tree_snapshot(&www);
    assert!(
        after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .all(|(k, _)| k.starts_with(".bundle/")),
        "a re-install changed the merged page"
    );
}
