//! Project pages of a simple repository: PEP 691 JSON
//! (`application/vnd.pypi.simple.v1+json`) and PEP 503 HTML, told apart by the response's
//! content type. Each file is reduced to what `lock` needs: its name, absolute URL (hrefs
//! resolved against the page, or its `<base href>`), sha256 (`hashes` / `#sha256=`) and
//! `requires-python`. `install` reads the pages it wrote earlier with the same parser.

use serde::Deserialize;

use crate::digest::Sha256Digest;

/// What `lock` asks an index for: JSON first, HTML when that is all the server has.
pub const ACCEPT: &str = "application/vnd.pypi.simple.v1+json, \
                          application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1";

/// One file listed on a project page.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexFile {
    pub filename: String,
    pub url: url::Url,
    pub sha256: Option<Sha256Digest>,
    pub requires_python: Option<String>,
    pub size: Option<u64>,
    /// The sha256 of the file's core metadata served beside it as `<url>.metadata`
    /// (PEP 658 / PEP 714), when the index offers it with a hash.
    pub metadata_sha256: Option<Sha256Digest>,
}

/// The HTML tags a project page may have (each file is an `<a>`, its `</a>` and a `<br/>`).
const MAX_HTML_TAGS: usize = 1_000_000;

fn bytecount(bytes: &[u8], b: u8) -> usize {
    bytes.iter().filter(|&&x| x == b).count()
}

/// Parses a project page served with `content_type` from `page` (the URL relative hrefs
/// resolve against). `Err` says why the page is not one.
pub fn parse_page(
    bytes: &[u8],
    content_type: Option<&str>,
    page: &url::Url,
) -> Result<Vec<IndexFile>, String> {
    let mime = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let text = std::str::from_utf8(bytes).map_err(|_| "the page is not UTF-8".to_string())?;
    if mime == "application/vnd.pypi.simple.v1+json" || mime == "application/json" {
        parse_json(text, page)
    } else if bytecount(bytes, b'<') > MAX_HTML_TAGS {
        // The HTML parser holds a few hundred bytes per tag: bound it before it runs.
        Err(format!(
            "more than {MAX_HTML_TAGS} HTML tags, far more than a project page holds"
        ))
    } else {
        Ok(parse_html(text, page))
    }
}

#[derive(Deserialize)]
struct JsonPage {
    meta: JsonMeta,
    files: Vec<JsonFile>,
}

#[derive(Deserialize)]
struct JsonMeta {
    #[serde(rename = "api-version")]
    api_version: String,
}

#[derive(Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::BTreeMap<String, String>,
    #[serde(rename = "requires-python", default)]
    requires_python: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(rename = "core-metadata", default)]
    core_metadata: Option<serde_json::Value>,
    #[serde(rename = "dist-info-metadata", default)]
    dist_info_metadata: Option<serde_json::Value>,
}

/// PEP 691's JSON form (API version 1.x).
pub fn parse_json(text: &str, page: &url::Url) -> Result<Vec<IndexFile>, String> {
    let parsed: JsonPage =
        serde_json::from_str(text).map_err(|e| format!("not a PEP 691 project page: {e}"))?;
    if !parsed.meta.api_version.starts_with("1.") {
        return Err(format!(
            "PEP 691 api-version {} is not supported (1.x is)",
            parsed.meta.api_version
        ));
    }
    let mut out = Vec::new();
    for f in parsed.files {
        let url = page
            .join(&f.url)
            .map_err(|e| format!("file `{}`: url `{}`: {e}", f.filename, f.url))?;
        let sha256 = match f.hashes.get("sha256") {
            Some(h) => Some(
                h.parse()
                    .map_err(|e| format!("file `{}`: hashes.sha256: {e}", f.filename))?,
            ),
            None => None,
        };
        // PEP 714's name first, PEP 658's as a fallback: `true` or `{"sha256": …}`.
        let metadata_sha256 = f
            .core_metadata
            .as_ref()
            .or(f.dist_info_metadata.as_ref())
            .and_then(|v| v.get("sha256")?.as_str()?.parse().ok());
        out.push(IndexFile {
            filename: f.filename,
            url,
            sha256,
            requires_python: f.requires_python.filter(|r| !r.trim().is_empty()),
            size: f.size,
            metadata_sha256,
        });
    }
    Ok(out)
}

/// PEP 503's HTML form: every `<a href>`; the file name is the URL's last path segment,
/// as pip takes it. Anchors that are not files (no path segment) are skipped.
pub fn parse_html(text: &str, page: &url::Url) -> Vec<IndexFile> {
    let mut out = Vec::new();
    for Anchor {
        mut url,
        requires_python,
        metadata_sha256,
    } in anchors(text, page)
    {
        let sha256 = url
            .fragment()
            .and_then(|f| f.strip_prefix("sha256="))
            .and_then(|h| h.parse().ok());
        url.set_fragment(None);
        let Some(filename) = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .filter(|s| !s.is_empty())
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        else {
            continue;
        };
        out.push(IndexFile {
            filename,
            url,
            sha256,
            requires_python,
            size: None,
            metadata_sha256,
        });
    }
    out
}

/// Every link of an HTML page (a repository's project list, say), resolved.
pub fn links(text: &str, page: &url::Url) -> Vec<url::Url> {
    anchors(text, page).into_iter().map(|a| a.url).collect()
}

/// One `<a>` of a page.
struct Anchor {
    url: url::Url,
    requires_python: Option<String>,
    metadata_sha256: Option<Sha256Digest>,
}

/// `<a href>` targets, resolved against the page (or its `<base href>`), with their
/// `data-requires-python`; attribute values entity-decoded.
fn anchors(text: &str, page: &url::Url) -> Vec<Anchor> {
    let Ok(dom) = tl::parse(text, tl::ParserOptions::default()) else {
        return Vec::new();
    };
    let attr = |tag: &tl::HTMLTag<'_>, name: &str| -> Option<String> {
        let raw = tag.attributes().get(name)??;
        Some(html_escape::decode_html_entities(&raw.as_utf8_str()).into_owned())
    };
    let tags = || dom.nodes().iter().filter_map(|n| n.as_tag());
    let base = tags()
        .find(|t| t.name().as_utf8_str().eq_ignore_ascii_case("base"))
        .and_then(|t| attr(t, "href"))
        .and_then(|href| page.join(&href).ok())
        .unwrap_or_else(|| page.clone());
    tags()
        .filter(|t| t.name().as_utf8_str().eq_ignore_ascii_case("a"))
        .filter_map(|tag| {
            let url = base.join(&attr(tag, "href")?).ok()?;
            let requires_python =
                attr(tag, "data-requires-python").filter(|r| !r.trim().is_empty());
            let metadata_sha256 = attr(tag, "data-core-metadata")
                .or_else(|| attr(tag, "data-dist-info-metadata"))
                .and_then(|v| v.strip_prefix("sha256=")?.parse().ok());
            Some(Anchor {
                url,
                requires_python,
                metadata_sha256,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e2a9ff1d7ec5b7e88fd3b2d4a5d3b8d4a5d3b8d4a5d3b8d4a5d3b8d4a5d3b8d4";

    fn page() -> url::Url {
        "https://pypi.example.org/simple/six/".parse().unwrap()
    }

    #[test]
    fn html_pages_resolve_hrefs_and_decode_attributes() {
        let html = format!(
            "<!DOCTYPE html><html><body>\n\
             <a href=\"../../packages/six-1.16.0-py2.py3-none-any.whl#sha256={HEX}\" \
                data-requires-python=\"&gt;=2.7, !=3.0.*\" data-dist-info-metadata=\"sha256={HEX}\">six-1.16.0-py2.py3-none-any.whl</a><br/>\n\
             <a href='https://files.example.org/p/six-1.15.0.tar.gz'>six-1.15.0.tar.gz</a>\n\
             <a href=\"six-1.0%2Blocal-py3-none-any.whl\">x</a>\n\
             </body></html>"
        );
        let files = parse_page(html.as_bytes(), Some("text/html; charset=utf-8"), &page()).unwrap();
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].filename, "six-1.16.0-py2.py3-none-any.whl");
        assert_eq!(
            files[0].url.as_str(),
            "https://pypi.example.org/packages/six-1.16.0-py2.py3-none-any.whl"
        );
        assert_eq!(files[0].sha256.unwrap().hex(), HEX);
        assert_eq!(files[0].requires_python.as_deref(), Some(">=2.7, !=3.0.*"));
        assert_eq!(files[0].metadata_sha256.unwrap().hex(), HEX);
        assert_eq!(files[1].sha256, None);
        assert_eq!(files[1].metadata_sha256, None);
        assert_eq!(files[1].url.host_str(), Some("files.example.org"));
        assert_eq!(files[2].filename, "six-1.0+local-py3-none-any.whl");
    }

    #[test]
    fn a_base_element_moves_relative_hrefs() {
        let html = "<html><head><base href=\"https://files.example.org/root/\"></head>\
                    <body><a href=\"a-1.0.tar.gz\">a</a></body></html>";
        let files = parse_html(html, &page());
        assert_eq!(
            files[0].url.as_str(),
            "https://files.example.org/root/a-1.0.tar.gz"
        );
    }

    #[test]
    fn json_pages_follow_pep_691() {
        let json = format!(
            r#"{{"meta": {{"api-version": "1.1"}}, "name": "six", "versions": ["1.16.0"],
                "files": [{{"filename": "six-1.16.0-py2.py3-none-any.whl",
                           "url": "../../packages/six-1.16.0-py2.py3-none-any.whl",
                           "hashes": {{"sha256": "{HEX}"}}, "requires-python": ">=3.7",
                           "size": 11053, "yanked": false, "core-metadata": {{"sha256": "{HEX}"}}}}]}}"#
        );
        let files = parse_page(
            json.as_bytes(),
            Some("application/vnd.pypi.simple.v1+json"),
            &page(),
        )
        .unwrap();
        assert_eq!(
            files[0].url.path(),
            "/packages/six-1.16.0-py2.py3-none-any.whl"
        );
        assert_eq!(files[0].size, Some(11053));
        assert_eq!(files[0].metadata_sha256.unwrap().hex(), HEX);
        assert_eq!(files[0].requires_python.as_deref(), Some(">=3.7"));
        let old = r#"{"meta": {"api-version": "2.0"}, "files": []}"#;
        assert!(parse_json(old, &page()).unwrap_err().contains("2.0"));
        let bad = r#"{"meta": {"api-version": "1.0"}, "files": [{"filename": "a", "url": "a", "hashes": {"sha256": "zz"}}]}"#;
        assert!(parse_json(bad, &page()).is_err());
    }

    #[test]
    fn a_page_of_millions_of_tags_is_refused_before_it_is_parsed() {
        let html = "<a href=a>".repeat(MAX_HTML_TAGS + 1);
        let e = parse_page(html.as_bytes(), Some("text/html"), &page()).unwrap_err();
        assert!(e.contains("HTML tags"), "{e}");
        let html = "<div>".repeat(100_000) + "<a href=\"six-1.0.tar.gz\">x</a>";
        assert_eq!(parse_page(html.as_bytes(), None, &page()).unwrap().len(), 1);
    }
}
