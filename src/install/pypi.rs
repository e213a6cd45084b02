//! The site's PEP 503 simple repository: `simple/index.html` listing every project and
//! `simple/<project>/index.html` linking each file under `python/` with its `#sha256=`,
//! `data-requires-python` and, where its `.metadata` is carried, `data-core-metadata`, merged with what earlier installs listed (their anchors are
//! kept; a file this bundle carries again takes its new anchor), plus a `pip.conf` for the
//! nodes. Pages are rendered deterministically, so an identical re-install finds them
//! byte-for-byte in place and stages nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::bundle::index::{EntryKind, Index};
use crate::error::{Error, Result};
use crate::fs::RootDir;
use crate::manifest::Manifest;
use crate::python::index::{links, parse_html};

/// The snippet for `/etc/pip.conf` (or `~/.config/pip/pip.conf`), at the web root.
pub const PIP_CONF: &str = "pip.conf";
const TOP_INDEX: &str = "simple/index.html";
/// Our own pages are small; a larger file is not one of them.
const MAX_PAGE_BYTES: u64 = 16 << 20;
/// Any URL will do to resolve a page's relative links: only their paths are read.
const PAGE_BASE: &str = "http://site.invalid/simple/";

/// One file's anchor.
#[derive(Debug, Clone, PartialEq)]
struct Anchor {
    sha256: Option<crate::digest::Sha256Digest>,
    requires_python: Option<String>,
    /// The sha256 of `<file>.metadata` beside it (PEP 658).
    metadata: Option<crate::digest::Sha256Digest>,
}

/// A file this bundle carries: its sha256 and that of its core metadata, if carried.
type Carried = (
    crate::digest::Sha256Digest,
    Option<crate::digest::Sha256Digest>,
);

/// The projects and files this bundle carries: project → file name → sha256s. A
/// `<file>.metadata` beside a carried `<file>` is its core metadata, not a file of its own.
fn carried(index: &Index) -> Result<BTreeMap<String, BTreeMap<String, Carried>>> {
    let python: BTreeMap<&str, crate::digest::Sha256Digest> = index
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Python)
        .map(|e| (e.path.as_str(), e.sha256))
        .collect();
    let metadata_of = |path: &str| python.get(format!("{path}.metadata").as_str()).copied();
    let mut out: BTreeMap<String, BTreeMap<String, _>> = BTreeMap::new();
    for entry in index.entries.iter().filter(|e| {
        e.kind == EntryKind::Python
            && !e
                .path
                .strip_suffix(".metadata")
                .is_some_and(|stem| python.contains_key(stem))
    }) {
        let Some(file) = entry
            .path
            .strip_prefix("python/")
            .filter(|f| !f.contains('/'))
        else {
            return Err(Error::Verify(format!(
                "python entry {} is not a file directly under python/",
                entry.path
            )));
        };
        let project = entry
            .artifacts
            .first()
            .and_then(|&a| index.artifacts.get(a))
            .and_then(|a| a.dest.strip_prefix("simple/"))
            .and_then(|d| d.strip_suffix('/'))
            .filter(|p| crate::python::normalize(p).is_ok_and(|n| n == *p))
            .ok_or_else(|| {
                Error::Verify(format!(
                    "python entry {} belongs to no artifact bound for simple/<project>/",
                    entry.path
                ))
            })?;
        out.entry(project.to_string())
            .or_default()
            .insert(file.to_string(), (entry.sha256, metadata_of(&entry.path)));
    }
    Ok(out)
}

/// The files install generates for the python entries (for pre-flight): none when the
/// bundle carries none.
pub fn generated_paths(index: &Index) -> Result<Vec<String>> {
    let projects = carried(index)?;
    if projects.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = vec![TOP_INDEX.to_string(), PIP_CONF.to_string()];
    out.extend(projects.keys().map(|p| format!("simple/{p}/index.html")));
    Ok(out)
}

/// An existing page of the simple repository: `None` when there is none, an error when
/// one is there that cannot be read in full (merging only part of it, or none, would
/// drop what earlier installs listed).
fn existing_page(root: &RootDir, rel: &str) -> Result<Option<Vec<u8>>> {
    super::web_root::existing_generated(
        root,
        rel,
        MAX_PAGE_BYTES,
        "a simple repository page",
        "this bundle's files",
    )
}

/// Pre-flight: every page the install will merge into can be read in full.
pub fn check_existing(root: &RootDir, index: &Index) -> Result<()> {
    for page in generated_paths(index)?
        .iter()
        .filter(|p| p.as_str() != PIP_CONF)
    {
        existing_page(root, page)?;
    }
    Ok(())
}

/// The pages and `pip.conf` to stage: `(path below the web root, bytes)`, only those
/// whose bytes differ from what the web root holds.
pub fn pages(
    root: &RootDir,
    index: &Index,
    locked_manifest: Option<&[u8]>,
    base_url: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let projects = carried(index)?;
    if projects.is_empty() {
        return Ok(Vec::new());
    }
    let requires_python = requires_python_of(locked_manifest)?;
    let base: url::Url = PAGE_BASE
        .parse()
        .map_err(|e| Error::Runtime(format!("{e}")))?;
    let mut out = Vec::new();
    let mut all_projects: BTreeSet<String> = projects.keys().cloned().collect();
    if let Some(existing) = existing_page(root, TOP_INDEX)? {
        let text = String::from_utf8_lossy(&existing);
        for link in links(&text, &base) {
            if let Some(p) = link
                .path()
                .strip_prefix("/simple/")
                .and_then(|p| p.strip_suffix('/'))
                .filter(|p| crate::python::normalize(p).is_ok_and(|n| n == *p))
            {
                all_projects.insert(p.to_string());
            }
        }
    }
    for (project, files) in &projects {
        let path = format!("simple/{project}/index.html");
        let mut anchors: BTreeMap<String, Anchor> = BTreeMap::new();
        if let Some(existing) = existing_page(root, &path)? {
            let page = base
                .join(&format!("{project}/"))
                .map_err(|e| Error::Runtime(e.to_string()))?;
            for link in parse_html(&String::from_utf8_lossy(&existing), &page) {
                if link
                    .url
                    .path()
                    .strip_prefix("/python/")
                    .is_some_and(|f| !f.contains('/'))
                {
                    anchors.insert(
                        link.filename,
                        Anchor {
                            sha256: link.sha256,
                            requires_python: link.requires_python,
                            metadata: link.metadata_sha256,
                        },
                    );
                }
            }
        }
        for (file, (sha256, metadata)) in files {
            anchors.insert(
                file.clone(),
                Anchor {
                    sha256: Some(*sha256),
                    requires_python: requires_python.get(file).cloned(),
                    metadata: *metadata,
                },
            );
        }
        out.push((path, project_page(project, &anchors).into_bytes()));
    }
    out.push((TOP_INDEX.to_string(), top_page(&all_projects).into_bytes()));
    out.push((PIP_CONF.to_string(), pip_conf(base_url)?.into_bytes()));
    out.retain(|(path, bytes)| root.read_small(path, MAX_PAGE_BYTES).as_deref() != Some(bytes));
    Ok(out)
}

/// The `requires-python` of each file the locked manifest lists.
fn requires_python_of(locked_manifest: Option<&[u8]>) -> Result<BTreeMap<String, String>> {
    let Some(bytes) = locked_manifest else {
        return Ok(BTreeMap::new());
    };
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::Verify("the bundle's locked manifest is not UTF-8".into()))?;
    let manifest: Manifest = serde_yaml_ng::from_str(text)
        .map_err(|e| Error::Verify(format!("the bundle's locked manifest does not parse: {e}")))?;
    Ok(manifest
        .python
        .iter()
        .flat_map(|s| &s.packages)
        .filter_map(|p| Some((p.filename.clone()?, p.requires_python.clone()?)))
        .collect())
}

/// Characters kept as they are in a link to a file name (RFC 3986 unreserved, plus `+`
/// and `!` which file names use); the rest are percent-encoded.
const HREF_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'+')
    .remove(b'!');

fn attr(value: &str) -> String {
    html_escape::encode_double_quoted_attribute(value).into_owned()
}

fn text(value: &str) -> String {
    html_escape::encode_text(value).into_owned()
}

fn project_page(project: &str, anchors: &BTreeMap<String, Anchor>) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html>\n  <head>\n");
    out.push_str("    <meta name=\"pypi:repository-version\" content=\"1.0\">\n");
    out.push_str(&format!("    <title>Links for {}</title>\n", text(project)));
    out.push_str("  </head>\n  <body>\n");
    out.push_str(&format!("    <h1>Links for {}</h1>\n", text(project)));
    for (file, anchor) in anchors {
        let mut href = format!(
            "../../python/{}",
            percent_encoding::utf8_percent_encode(file, HREF_ESCAPED)
        );
        if let Some(d) = anchor.sha256 {
            href.push_str(&format!("#sha256={}", d.hex()));
        }
        let requires = anchor
            .requires_python
            .as_deref()
            .map(|r| format!(" data-requires-python=\"{}\"", attr(r)))
            .unwrap_or_default();
        // Both names: PEP 714's, and PEP 658's that pip before 23.3 reads.
        let metadata = anchor
            .metadata
            .map(|d| {
                format!(
                    " data-dist-info-metadata=\"sha256={0}\" data-core-metadata=\"sha256={0}\"",
                    d.hex()
                )
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "    <a href=\"{}\"{requires}{metadata}>{}</a><br/>\n",
            attr(&href),
            text(file)
        ));
    }
    out.push_str("  </body>\n</html>\n");
    out
}

fn top_page(projects: &BTreeSet<String>) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html>\n  <head>\n");
    out.push_str("    <meta name=\"pypi:repository-version\" content=\"1.0\">\n");
    out.push_str("    <title>Simple index</title>\n  </head>\n  <body>\n");
    for p in projects {
        out.push_str(&format!(
            "    <a href=\"{}/\">{}</a><br/>\n",
            attr(p),
            text(p)
        ));
    }
    out.push_str("  </body>\n</html>\n");
    out
}

/// The simple repository's URL on the site: `<base-url>simple/`.
pub fn index_url(base_url: &str) -> String {
    format!("{}/simple/", base_url.trim_end_matches('/'))
}

fn pip_conf(base_url: &str) -> Result<String> {
    let index = index_url(base_url);
    // Checked before parsing: the URL parser drops line breaks rather than refusing them.
    if index.contains(|c: char| c.is_control()) {
        return Err(Error::Usage(format!(
            "--base-url {}: must be one line",
            base_url.escape_debug()
        )));
    }
    let url: url::Url = index
        .parse()
        .map_err(|e| Error::Usage(format!("--base-url {base_url}: {e}")))?;
    let mut out = String::from(
        "# pip configuration for the site's Python package mirror (written by airgap-bundle).\n\
         # Copy to /etc/pip.conf (or ~/.config/pip/pip.conf) on each node.\n\
         [global]\n",
    );
    out.push_str(&format!("index-url = {index}\n"));
    if url.scheme() == "http"
        && let Some(host) = url.host_str()
    {
        // Plain HTTP: pip warns and refuses unless the host is trusted.
        out.push_str(&format!("trusted-host = {host}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_and_parse_back() {
        let d: crate::digest::Sha256Digest = "ab".repeat(32).parse().unwrap();
        let mut anchors = BTreeMap::new();
        anchors.insert(
            "a-1.0+local-py3-none-any.whl".to_string(),
            Anchor {
                sha256: Some(d),
                requires_python: Some(">=3.7,<4\"".into()),
                metadata: Some(d),
            },
        );
        let page = project_page("a", &anchors);
        assert!(
            page.contains("data-requires-python=\"&gt;=3.7,&lt;4&quot;\""),
            "{page}"
        );
        let links = parse_html(&page, &"http://h/simple/a/".parse().unwrap());
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].filename, "a-1.0+local-py3-none-any.whl");
        assert_eq!(links[0].url.path(), "/python/a-1.0+local-py3-none-any.whl");
        assert_eq!(links[0].sha256, Some(d));
        assert_eq!(links[0].requires_python.as_deref(), Some(">=3.7,<4\""));
        assert_eq!(links[0].metadata_sha256, Some(d));
    }

    #[test]
    fn pip_conf_trusts_plain_http_hosts_only() {
        let http = pip_conf("http://web.local:8080/").unwrap();
        assert!(http.contains("index-url = http://web.local:8080/simple/\n"));
        assert!(http.contains("trusted-host = web.local\n"));
        let https = pip_conf("https://web.local/mirror").unwrap();
        assert!(https.contains("index-url = https://web.local/mirror/simple/\n"));
        assert!(!https.contains("trusted-host"));
        assert!(pip_conf("http://a/\nindex-url = http://evil/").is_err());
    }
}
