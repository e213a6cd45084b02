//! Helm fixtures for the chart tests (issue 16), with no helm binary: real chart
//! directories packaged exactly as `helm package` lays them out (stock `tar czf`, the
//! archive's top directory is the chart's name), a Helm repository `index.yaml` written as
//! `helm repo index` writes it, Helm OCI artifacts pushed to a real `docker-registry` with
//! the distribution API (curl), and a checker of a served Helm repository against Helm's
//! index schema (apiVersion v1, entries, digests, created) that fetches every chart over
//! HTTP and compares its sha256 with the index's digest.

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Apache, http_request, output_ok, require_tool, sha256_bytes, sha256_file, write_file};

/// Helm's OCI config media type (the chart's `Chart.yaml` as JSON).
pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
/// Helm's OCI layer media type (the chart's `.tgz`).
pub const HELM_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// The OCI image manifest media type (what Helm pushes a chart as).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The `created` every generated upstream index entry carries (RFC 3339, as Helm writes it).
pub const UPSTREAM_CREATED: &str = "2024-05-06T07:08:09.123456789Z";

/// One dependency of a chart, as `Chart.yaml` declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub version: String,
    pub repository: String,
}

/// A chart's metadata, read from the `Chart.yaml` inside its `.tgz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartMeta {
    pub api_version: String,
    pub name: String,
    pub version: String,
    pub app_version: Option<String>,
    pub description: Option<String>,
    pub chart_type: Option<String>,
    pub dependencies: Vec<Dependency>,
}

/// The description `package_chart` writes for `name` `version` (distinct per version, so
/// that a test can tell which chart's `Chart.yaml` an index entry was built from).
pub fn description(name: &str, version: &str) -> String {
    format!("The {name} chart, release {version}, for the air-gap tests")
}

/// Builds the chart directory `dir/src/<name>-<version>/<name>/` (`Chart.yaml` with
/// apiVersion v2, name, version, appVersion, description, `type: application`, then
/// `extra` YAML lines; `values.yaml`; `templates/configmap.yaml`; for each entry of a
/// `dependencies:` list in `extra`, the subchart under `charts/<dep>/` as `helm dependency
/// build` leaves it unpacked) and packages it as `helm package` does:
/// `tar czf dir/<name>-<version>.tgz -C … <name>`. Returns the `.tgz` path.
pub fn package_chart(
    dir: &Path,
    name: &str,
    version: &str,
    app_version: &str,
    extra: &str,
) -> PathBuf {
    require_tool("tar");
    let src = dir.join("src").join(format!("{name}-{version}"));
    let chart = src.join(name);
    if chart.exists() {
        fs::remove_dir_all(&chart).unwrap();
    }
    let mut chart_yaml = format!(
        "apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"{app_version}\"\ndescription: {}\ntype: application\n",
        description(name, version)
    );
    chart_yaml.push_str(extra);
    if !chart_yaml.ends_with('\n') {
        chart_yaml.push('\n');
    }
    write_file(chart.join("Chart.yaml"), &chart_yaml);
    write_file(
        chart.join("values.yaml"),
        format!(
            "# Default values for {name}.\nreplicaCount: 1\ngreeting: hello from {name} {version}\n"
        ),
    );
    write_file(
        chart.join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-{{ .Chart.Name }}\n  labels:\n    app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    );
    write_file(
        chart.join(".helmignore"),
        "# Patterns to ignore when building packages.\n.git/\n*.swp\n",
    );
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&chart_yaml).unwrap_or_else(|e| {
        panic!("Chart.yaml of {name} {version} is not YAML: {e}\n{chart_yaml}")
    });
    if let Some(deps) = parsed["dependencies"].as_sequence() {
        for d in deps {
            let dep = d["name"].as_str().expect("dependency name");
            let dep_version = d["version"].as_str().expect("dependency version");
            write_file(
                chart.join("charts").join(dep).join("Chart.yaml"),
                format!(
                    "apiVersion: v2\nname: {dep}\nversion: {dep_version}\ndescription: A library chart {name} depends on\ntype: library\n"
                ),
            );
            write_file(
                chart
                    .join("charts")
                    .join(dep)
                    .join("templates/_helpers.tpl"),
                format!("{{{{- define \"{dep}.name\" -}}}}{dep}{{{{- end -}}}}\n"),
            );
        }
    }
    let tgz = dir.join(format!("{name}-{version}.tgz"));
    output_ok(
        Command::new("tar")
            .arg("czf")
            .arg(&tgz)
            .arg("-C")
            .arg(&src)
            .arg(name),
    );
    super::install::make_world_readable(&tgz);
    tgz
}

/// The metadata of the chart packaged in `tgz`: its `<name>/Chart.yaml`, read from the
/// archive (as `helm repo index` reads it). Panics when the archive holds none, or more
/// than one top directory.
pub fn chart_meta(tgz: &Path) -> ChartMeta {
    let bytes = fs::read(tgz).unwrap_or_else(|e| panic!("read {}: {e}", tgz.display()));
    chart_meta_from_bytes(&bytes, &tgz.display().to_string())
}

/// [`chart_meta`] of a `.tgz` held in memory (`what` names it in a failure).
pub fn chart_meta_from_bytes(bytes: &[u8], what: &str) -> ChartMeta {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut tops = std::collections::BTreeSet::new();
    let mut chart_yaml = None;
    for entry in archive
        .entries()
        .unwrap_or_else(|e| panic!("{what} is not a tar.gz: {e}"))
    {
        let mut entry = entry.unwrap_or_else(|e| panic!("{what}: bad tar entry: {e}"));
        let path = entry.path().unwrap().into_owned();
        let parts: Vec<String> = path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if let Some(top) = parts.first() {
            tops.insert(top.clone());
        }
        if parts.len() == 2 && parts[1] == "Chart.yaml" {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            chart_yaml = Some(text);
        }
    }
    assert_eq!(tops.len(), 1, "{what}: not one top directory: {tops:?}");
    let text = chart_yaml.unwrap_or_else(|| panic!("{what}: no <name>/Chart.yaml"));
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{what}: Chart.yaml is not YAML: {e}"));
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let meta = ChartMeta {
        api_version: s("apiVersion").expect("Chart.yaml apiVersion"),
        name: s("name").expect("Chart.yaml name"),
        version: s("version").expect("Chart.yaml version"),
        app_version: s("appVersion"),
        description: s("description"),
        chart_type: s("type"),
        dependencies: v["dependencies"]
            .as_sequence()
            .map(|deps| {
                deps.iter()
                    .map(|d| Dependency {
                        name: d["name"].as_str().unwrap_or_default().to_string(),
                        version: d["version"].as_str().unwrap_or_default().to_string(),
                        repository: d["repository"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    assert_eq!(
        tops.iter().next().unwrap(),
        &meta.name,
        "{what}: the top directory is not the chart's name"
    );
    meta
}

/// Writes `repo_dir/index.yaml` for the charts `charts` (`.tgz` paths) as `helm repo index`
/// does: apiVersion v1, `entries` by name (newest version first) with apiVersion, name,
/// version, appVersion, `urls`, `digest` (sha256 of the `.tgz`) and `created`, and
/// `generated`. The URL of each chart is its file name (relative to the repo) with
/// `relative_urls`, else `base_url` followed by the file name (an absolute URL, as
/// `helm repo index --url` writes). Deliberately without description or type: whatever an
/// install writes for those comes from the chart's own `Chart.yaml`. Returns the text.
pub fn write_index(
    repo_dir: &Path,
    charts: &[PathBuf],
    relative_urls: bool,
    base_url: &str,
) -> String {
    let mut by_name: std::collections::BTreeMap<String, Vec<(ChartMeta, String, String)>> =
        Default::default();
    for tgz in charts {
        let meta = chart_meta(tgz);
        let file = tgz.file_name().unwrap().to_string_lossy().into_owned();
        let url = if relative_urls {
            file
        } else {
            format!("{base_url}{file}")
        };
        by_name
            .entry(meta.name.clone())
            .or_default()
            .push((meta, url, sha256_file(tgz)));
    }
    let mut y = String::from("apiVersion: v1\nentries:\n");
    for (name, mut versions) in by_name {
        versions.sort_by_key(|v| std::cmp::Reverse(semver_key(&v.0.version)));
        y.push_str(&format!("  {name}:\n"));
        for (meta, url, digest) in versions {
            y.push_str(&format!("  - apiVersion: {}\n", meta.api_version));
            if let Some(app) = &meta.app_version {
                y.push_str(&format!("    appVersion: \"{app}\"\n"));
            }
            y.push_str(&format!("    created: \"{UPSTREAM_CREATED}\"\n"));
            y.push_str(&format!("    digest: {digest}\n"));
            y.push_str(&format!("    name: {}\n", meta.name));
            y.push_str(&format!("    urls:\n    - {url}\n"));
            y.push_str(&format!("    version: {}\n", meta.version));
        }
    }
    y.push_str(&format!("generated: \"{UPSTREAM_CREATED}\"\n"));
    write_file(repo_dir.join("index.yaml"), &y);
    super::install::make_world_readable(&repo_dir.join("index.yaml"));
    y
}

/// A sort key for `MAJOR.MINOR.PATCH` (an optional `v`; pre-release and build ignored).
fn semver_key(v: &str) -> (u64, u64, u64) {
    let core = v
        .trim_start_matches('v')
        .split(['-', '+'])
        .next()
        .unwrap_or_default();
    let mut it = core.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// The config blob Helm pushes for a chart: its metadata as JSON, in the field order of
/// Helm's `chart.Metadata` (empty fields left out).
pub fn helm_config_json(meta: &ChartMeta) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let mut fields = vec![
        format!("\"name\":{}", q(&meta.name)),
        format!("\"version\":{}", q(&meta.version)),
    ];
    if let Some(d) = &meta.description {
        fields.push(format!("\"description\":{}", q(d)));
    }
    fields.push(format!("\"apiVersion\":{}", q(&meta.api_version)));
    if let Some(a) = &meta.app_version {
        fields.push(format!("\"appVersion\":{}", q(a)));
    }
    if !meta.dependencies.is_empty() {
        let deps: Vec<String> = meta
            .dependencies
            .iter()
            .map(|d| {
                format!(
                    "{{\"name\":{},\"version\":{},\"repository\":{}}}",
                    q(&d.name),
                    q(&d.version),
                    q(&d.repository)
                )
            })
            .collect();
        fields.push(format!("\"dependencies\":[{}]", deps.join(",")));
    }
    if let Some(t) = &meta.chart_type {
        fields.push(format!("\"type\":{}", q(t)));
    }
    format!("{{{}}}", fields.join(","))
}

/// Pushes the chart `tgz` (metadata `meta`) as a Helm OCI artifact to the plain-HTTP
/// registry on 127.0.0.1:`registry_port` under `repo:tag`, as `helm push` does: the config
/// ([`helm_config_json`]) and the layer (the `.tgz`) each uploaded with
/// `POST /v2/<repo>/blobs/uploads/` then `PUT <location>?digest=…`, then the OCI manifest
/// (Helm's media types and `org.opencontainers.image.*` annotations) `PUT` with its media
/// type. Returns the manifest's digest (`sha256:<hex>`), checked against the registry's
/// `Docker-Content-Digest`.
pub fn push_oci_chart(
    registry_port: u16,
    repo: &str,
    tag: &str,
    tgz: &Path,
    meta: &ChartMeta,
) -> String {
    require_tool("curl");
    let scratch = tempfile::tempdir().expect("scratch dir");
    let config = helm_config_json(meta).into_bytes();
    let layer = fs::read(tgz).unwrap_or_else(|e| panic!("read {}: {e}", tgz.display()));
    let config_digest = upload_blob(registry_port, repo, &config, scratch.path());
    let layer_digest = upload_blob(registry_port, repo, &layer, scratch.path());
    let mut annotations =
        vec!["\"org.opencontainers.image.created\":\"2024-05-06T07:08:09Z\"".to_string()];
    if let Some(d) = &meta.description {
        annotations.push(format!(
            "\"org.opencontainers.image.description\":{}",
            serde_json::to_string(d).unwrap()
        ));
    }
    annotations.push(format!(
        "\"org.opencontainers.image.title\":{}",
        serde_json::to_string(&meta.name).unwrap()
    ));
    annotations.push(format!(
        "\"org.opencontainers.image.version\":{}",
        serde_json::to_string(&meta.version).unwrap()
    ));
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"{HELM_CONFIG}\",\"digest\":\"{config_digest}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"{HELM_LAYER}\",\"digest\":\"{layer_digest}\",\"size\":{}}}],\"annotations\":{{{}}}}}",
        config.len(),
        layer.len(),
        annotations.join(",")
    );
    let file = scratch.path().join("manifest.json");
    fs::write(&file, &manifest).unwrap();
    let headers = curl_headers(&[
        "-X".to_string(),
        "PUT".to_string(),
        "-H".to_string(),
        format!("Content-Type: {OCI_MANIFEST}"),
        "--data-binary".to_string(),
        format!("@{}", file.display()),
        format!("http://127.0.0.1:{registry_port}/v2/{repo}/manifests/{tag}"),
    ]);
    let digest = format!("sha256:{}", sha256_bytes(manifest.as_bytes()));
    assert_eq!(
        header(&headers, "docker-content-digest").as_deref(),
        Some(digest.as_str()),
        "the registry stored another manifest than the one pushed:\n{headers}"
    );
    digest
}

/// One blob uploaded to `repo` (POST, then PUT with `?digest=`); its digest `sha256:<hex>`.
fn upload_blob(port: u16, repo: &str, bytes: &[u8], scratch: &Path) -> String {
    let digest = format!("sha256:{}", sha256_bytes(bytes));
    let headers = curl_headers(&[
        "-X".to_string(),
        "POST".to_string(),
        format!("http://127.0.0.1:{port}/v2/{repo}/blobs/uploads/"),
    ]);
    let location = header(&headers, "location")
        .unwrap_or_else(|| panic!("no Location for the upload session:\n{headers}"));
    let location = if location.starts_with('/') {
        format!("http://127.0.0.1:{port}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let file = scratch.join("blob");
    fs::write(&file, bytes).unwrap();
    let headers = curl_headers(&[
        "-X".to_string(),
        "PUT".to_string(),
        "-H".to_string(),
        "Content-Type: application/octet-stream".to_string(),
        "--data-binary".to_string(),
        format!("@{}", file.display()),
        format!("{location}{sep}digest={digest}"),
    ]);
    assert_eq!(
        header(&headers, "docker-content-digest").as_deref(),
        Some(digest.as_str()),
        "blob upload:\n{headers}"
    );
    digest
}

/// `curl -sS -f -o /dev/null -D - ARGS…`: the response headers (the request must succeed).
fn curl_headers(args: &[String]) -> String {
    let out = output_ok(
        Command::new("curl")
            .args(["-sS", "-f", "-o", "/dev/null", "-D", "-"])
            .args(args),
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of the last header `name` (case-insensitive) in a raw header block.
fn header(headers: &str, name: &str) -> Option<String> {
    headers
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .next_back()
}

/// A Helm OCI manifest (as `skopeo inspect --raw` shows it): (config media type, config
/// digest hex, [(layer media type, layer digest hex)]).
pub fn helm_manifest_parts(raw: &[u8]) -> (String, String, Vec<(String, String)>) {
    let v: serde_json::Value = serde_json::from_slice(raw).unwrap_or_else(|e| {
        panic!(
            "manifest is not JSON: {e}\n{}",
            String::from_utf8_lossy(raw)
        )
    });
    let hex = |d: &serde_json::Value| {
        d["digest"]
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:")
            .to_string()
    };
    let layers = v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().unwrap_or_default().to_string(),
                hex(l),
            )
        })
        .collect();
    (
        v["config"]["mediaType"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        hex(&v["config"]),
        layers,
    )
}

/// `GET /v2/<repo>/blobs/sha256:<hex>` from the plain-HTTP registry on `port`: the bytes.
pub fn registry_blob(port: u16, repo: &str, hex: &str) -> Vec<u8> {
    let r = http_request(port, "GET", &format!("/v2/{repo}/blobs/sha256:{hex}"), &[]);
    assert_eq!(r.status, 200, "GET blob {hex} of {repo}: HTTP {}", r.status);
    r.body
}

// ---------------------------------------------------------------------------
// Checking a served Helm repository against Helm's index schema
// ---------------------------------------------------------------------------

/// One chart version of a checked index.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    /// The entry as the index has it.
    pub yaml: serde_yaml_ng::Value,
    pub name: String,
    pub version: String,
    pub digest: String,
    pub urls: Vec<String>,
    /// The bytes its first URL served.
    pub bytes: Vec<u8>,
}

/// A served `index.yaml`, parsed.
#[derive(Debug, Clone)]
pub struct CheckedIndex {
    pub doc: serde_yaml_ng::Value,
    pub entries: Vec<IndexEntry>,
}

impl CheckedIndex {
    /// The entry `name` `version`; panics when absent.
    #[track_caller]
    pub fn entry(&self, name: &str, version: &str) -> &IndexEntry {
        self.entries
            .iter()
            .find(|e| e.name == name && e.version == version)
            .unwrap_or_else(|| {
                panic!(
                    "no {name} {version} in the index:\n{}",
                    serde_yaml_ng::to_string(&self.doc).unwrap()
                )
            })
    }

    /// Every (name, version) of the index, sorted.
    pub fn versions(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .entries
            .iter()
            .map(|e| (e.name.clone(), e.version.clone()))
            .collect();
        v.sort();
        v
    }
}

/// Fetches `<repo_path>/index.yaml` from `apache` and checks it as Helm's repo loader
/// does, plus what a repo must serve: apiVersion v1; `entries` a map of chart name to a
/// non-empty list; every entry with apiVersion, `name` equal to its key, a semver
/// `version`, non-empty `urls`, a `digest` of 64 lowercase hex, a `created` in RFC 3339;
/// `generated` in RFC 3339 when present; and every URL (relative ones resolved against
/// `<repo_path>/`, absolute ones on 127.0.0.1 fetched from their own port) serving bytes
/// whose sha256 is the digest. Panics listing every problem.
#[track_caller]
pub fn check_served_repo(apache: &Apache, repo_path: &str) -> CheckedIndex {
    match served_repo(apache, repo_path) {
        Ok(index) => index,
        Err(problems) => panic!(
            "the Helm repository {} is not valid:\n  {}",
            apache.url(repo_path),
            problems.join("\n  ")
        ),
    }
}

/// [`check_served_repo`] without the panic: the parsed index, or every problem found.
pub fn served_repo(apache: &Apache, repo_path: &str) -> Result<CheckedIndex, Vec<String>> {
    let repo_path = repo_path.trim_matches('/');
    let prefix = if repo_path.is_empty() {
        String::new()
    } else {
        format!("{repo_path}/")
    };
    let (status, body) = apache.http_get(&format!("{prefix}index.yaml"));
    if status != 200 {
        return Err(vec![format!("GET {prefix}index.yaml: HTTP {status}")]);
    }
    let text =
        String::from_utf8(body).map_err(|e| vec![format!("index.yaml is not UTF-8: {e}")])?;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| vec![format!("index.yaml is not YAML: {e}\n{text}")])?;
    let mut problems = Vec::new();
    let mut entries = Vec::new();
    if doc["apiVersion"].as_str() != Some("v1") {
        problems.push(format!("apiVersion is {:?}, not v1", doc["apiVersion"]));
    }
    if let Some(g) = doc.get("generated") {
        match g.as_str() {
            Some(s) if is_rfc3339(s) => {}
            _ => problems.push(format!("generated {g:?} is not RFC 3339")),
        }
    }
    let Some(map) = doc["entries"].as_mapping() else {
        problems.push("no entries map".to_string());
        return Err(problems);
    };
    for (key, list) in map {
        let key = key.as_str().unwrap_or_default().to_string();
        let Some(list) = list.as_sequence().filter(|l| !l.is_empty()) else {
            problems.push(format!("entries.{key} is not a non-empty list"));
            continue;
        };
        for e in list {
            let at = format!("entries.{key}[{}]", e["version"].as_str().unwrap_or("?"));
            let name = e["name"].as_str().unwrap_or_default().to_string();
            if name != key {
                problems.push(format!("{at}: name {name:?} is not the key {key:?}"));
            }
            if e["apiVersion"].as_str().is_none_or(|a| a.is_empty()) {
                problems.push(format!("{at}: no apiVersion"));
            }
            let version = e["version"].as_str().unwrap_or_default().to_string();
            if !is_semver(&version) {
                problems.push(format!("{at}: version {version:?} is not semver"));
            }
            let digest = e["digest"].as_str().unwrap_or_default().to_string();
            if digest.len() != 64
                || !digest
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                problems.push(format!("{at}: digest {digest:?} is not 64 lowercase hex"));
            }
            match e["created"].as_str() {
                Some(c) if is_rfc3339(c) => {}
                other => problems.push(format!("{at}: created {other:?} is not RFC 3339")),
            }
            let urls: Vec<String> = e["urls"]
                .as_sequence()
                .map(|u| {
                    u.iter()
                        .filter_map(|x| x.as_str())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if urls.is_empty() {
                problems.push(format!("{at}: no urls"));
            }
            let mut first_bytes = None;
            for url in &urls {
                match fetch_chart_url(apache, &prefix, url) {
                    Ok(bytes) => {
                        let got = sha256_bytes(&bytes);
                        if got != digest {
                            problems.push(format!(
                                "{at}: {url} serves bytes with sha256 {got}, the digest says {digest}"
                            ));
                        }
                        first_bytes.get_or_insert(bytes);
                    }
                    Err(p) => problems.push(format!("{at}: {p}")),
                }
            }
            entries.push(IndexEntry {
                yaml: e.clone(),
                name,
                version,
                digest,
                urls,
                bytes: first_bytes.unwrap_or_default(),
            });
        }
    }
    if problems.is_empty() {
        Ok(CheckedIndex { doc, entries })
    } else {
        Err(problems)
    }
}

/// The bytes a chart URL of the index serves: relative to `prefix` on `apache`, or an
/// absolute `http://127.0.0.1:PORT/…` fetched from that port.
fn fetch_chart_url(apache: &Apache, prefix: &str, url: &str) -> Result<Vec<u8>, String> {
    let (port, path) = if let Some(rest) = url.strip_prefix("http://127.0.0.1:") {
        let (port, path) = rest.split_once('/').ok_or(format!("{url}: no path"))?;
        (
            port.parse::<u16>()
                .map_err(|_| format!("{url}: bad port"))?,
            path.to_string(),
        )
    } else if url.contains("://") || url.starts_with('/') {
        return Err(format!("{url}: neither relative nor on 127.0.0.1"));
    } else {
        (apache.port, format!("{prefix}{url}"))
    };
    let r = http_request(port, "GET", &path, &[]);
    if r.status != 200 {
        return Err(format!("GET {url}: HTTP {}", r.status));
    }
    Ok(r.body)
}

/// A semantic version as Helm accepts a chart version: an optional `v`, `MAJOR.MINOR.PATCH`
/// of decimal numbers, then optional `-pre.release` and `+build` of `[0-9A-Za-z.-]`.
pub fn is_semver(v: &str) -> bool {
    let v = v.strip_prefix('v').unwrap_or(v);
    let (rest, build) = match v.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let ident_ok = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && pre.is_none_or(ident_ok)
        && build.is_none_or(ident_ok)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` with fields in range (RFC 3339 `date-time`;
/// `t`/`z` and a space instead of `T` as RFC 3339 allows).
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return false;
    }
    if b[13] != b':' || b[16] != b':' {
        return false;
    }
    let (Some(_y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = (
        num(0, 4),
        num(5, 2),
        num(8, 2),
        num(11, 2),
        num(14, 2),
        num(17, 2),
    ) else {
        return false;
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &s[i..] {
        "Z" | "z" => true,
        off if off.len() == 6 => {
            matches!(off.as_bytes()[0], b'+' | b'-')
                && off.as_bytes()[3] == b':'
                && num(i + 1, 2).is_some_and(|h| h <= 23)
                && num(i + 4, 2).is_some_and(|m| m <= 59)
        }
        _ => false,
    }
}
