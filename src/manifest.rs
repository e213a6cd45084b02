//! The manifest schema of SPEC §2 (every section, so that later kinds only add resolvers),
//! loaded from YAML or JSON with file/line/column errors, and the checks that tell a loose
//! manifest from a locked one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::Sha256Digest;
use crate::error::{Error, IoContext, Result};

/// The only manifest API version this tool reads.
pub const API_VERSION: &str = "bundle/v1";

/// A manifest as written by an operator (loose) or by `bundle lock` (locked).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<Platform>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub debs: Vec<DebRepo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<ChartEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonSection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
}

/// A plain file fetched over HTTP(S), installed under `files/<host>/<path>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub url: SourceUrl,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// An OCI image, pinned by digest in a lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    #[serde(rename = "ref")]
    pub reference: ImageRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<Vec<Platform>>,
}

/// A Debian-style apt repository and the packages taken from it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DebRepo {
    pub name: String,
    pub url: SourceUrl,
    pub suite: String,
    #[serde(default)]
    pub components: Vec<String>,
    #[serde(default)]
    pub architectures: Vec<String>,
    /// The upstream OpenPGP key: a file (relative to the manifest's directory) in a loose
    /// manifest, the armored key itself in a lock (so the lock is self-contained).
    #[serde(rename = "signed-by", default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// How far `lock` follows dependencies (`full`, `default`, `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closure: Option<crate::apt::resolve::Closure>,
    /// `false` accepts a Release past its `Valid-Until` (a snapshot mirror), as apt's
    /// `Check-Valid-Until: no` does; the signature is checked all the same.
    #[serde(
        rename = "check-valid-until",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub check_valid_until: Option<bool>,
    /// The signed Release `lock` resolved against (filled by `lock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<LockedRelease>,
    #[serde(default)]
    pub packages: Vec<DebPackage>,
    /// Dependencies `lock` left to the site's own OS mirror (SPEC §6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<ExternalDep>,
}

impl DebRepo {
    /// Where a repository's files go in the bundle (and on the web root). Also checks the
    /// words that go into its `.sources` snippet (suite, components, architectures): no
    /// whitespace or control character can add a line or a field there.
    pub fn dir(&self) -> Result<String> {
        let repo = self;
        crate::bundle::check_release_name(&repo.name)
            .map_err(|e| Error::Usage(format!("debs name `{}`: {e}", repo.name)))?;
        if repo.name.ends_with(".sources") {
            return Err(Error::Usage(format!(
                "debs name `{}`: must not end in `.sources` (the snippet beside each repository is named so)",
                repo.name
            )));
        }
        let words = std::iter::once(("suite", &repo.suite))
            .chain(repo.components.iter().map(|c| ("components", c)))
            .chain(repo.architectures.iter().map(|a| ("architectures", a)))
            .chain(
                repo.packages
                    .iter()
                    .filter_map(|p| p.arch.as_ref())
                    .map(|a| ("packages[].arch", a)),
            );
        for (field, word) in words {
            let ok = !word.is_empty()
                && word.len() <= 128
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._+~/-".contains(c))
                && !word.split('/').any(|part| part == "..");
            if !ok {
                return Err(Error::Usage(format!(
                    "debs `{}` {field} `{}`: only letters, digits and `._+~/-` are allowed",
                    repo.name,
                    word.escape_debug()
                )));
            }
        }
        Ok(format!("debs/{}", repo.name))
    }

    /// The architectures the repository is read for: its own list, else the manifest's
    /// `platforms` (`linux/amd64` → `amd64`), else `amd64`. `lock` and `create` agree on it.
    pub fn arches(&self, platforms: &[Platform]) -> Vec<String> {
        if !self.architectures.is_empty() {
            return self.architectures.clone();
        }
        let mut from_platforms: Vec<String> = platforms
            .iter()
            .filter(|p| p.os == "linux")
            .map(|p| match (p.architecture.as_str(), p.variant.as_deref()) {
                ("arm", Some("v7") | None) => "armhf".to_string(),
                ("386", _) => "i386".to_string(),
                (a, _) => a.to_string(),
            })
            .collect();
        from_platforms.dedup();
        if from_platforms.is_empty() {
            vec!["amd64".to_string()]
        } else {
            from_platforms
        }
    }
}

/// Checks the `debs` repositories together: names unique (each is a directory).
pub fn check_deb_repo_names(repos: &[DebRepo]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for repo in repos {
        repo.dir()?;
        if !seen.insert(repo.name.as_str()) {
            return Err(Error::Usage(format!(
                "two debs repositories are named `{}`: each becomes debs/<name>/ on the web root",
                repo.name
            )));
        }
    }
    Ok(())
}

/// The signed Release a repository was locked against: `create` carries exactly it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedRelease {
    /// `InRelease`, or `Release` (with `Release.gpg`).
    pub file: String,
    pub sha256: Sha256Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
}

/// A dependency no carried repository provides (or a `Priority: required` one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExternalDep {
    /// As control data writes it: `libc6 (>= 2.34)`, `awk | gawk`.
    pub relation: String,
    pub required_by: String,
    pub reason: String,
}

/// One package of a [`DebRepo`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DebPackage {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The `.deb`'s path in the repository (`pool/main/j/jq/jq_1.6-2.1_amd64.deb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// A Helm chart: `{repo, name, version}` from an HTTP repository (the lock adds the
/// chart's absolute `url` and `sha256`), or `{ref: oci://…}` from an OCI registry (the lock
/// adds `@sha256:` to the reference).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChartEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<SourceUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An exact version or a semver range (`~1.16`, `>=1.2 <2`); exact in a lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<SourceUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Where a chart comes from, once its entry is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum ChartSource<'a> {
    Http {
        repo: &'a SourceUrl,
        name: &'a str,
        version: &'a str,
    },
    Oci(ImageRef),
}

impl ChartEntry {
    /// The entry as one of the two forms, or a usage error naming `charts[i]`.
    pub fn source(&self, i: usize) -> Result<ChartSource<'_>> {
        let bad = |why: &str| {
            Error::Usage(format!("charts[{i}]: {why}")).with_hint(
                "write `{repo: URL, name: NAME, version: VERSION}` or `{ref: oci://HOST/PATH/NAME:VERSION}`",
            )
        };
        match (&self.reference, &self.repo, &self.name, &self.version) {
            (Some(r), None, None, None) if self.url.is_none() && self.sha256.is_none() => {
                let rest = r
                    .strip_prefix("oci://")
                    .ok_or_else(|| bad(&format!("`{r}` must start with oci://")))?;
                let image: ImageRef = rest.parse().map_err(|e: String| bad(&e))?;
                if image.tag.is_none() {
                    return Err(bad(&format!("`{r}` has no :VERSION tag")));
                }
                Ok(ChartSource::Oci(image))
            }
            (Some(_), ..) => Err(bad(
                "`ref` goes alone (no repo, name, version, url or sha256)",
            )),
            (None, Some(repo), Some(name), Some(version)) => {
                if name.is_empty()
                    || name.contains(['/', '\\'])
                    || name.starts_with('.')
                    || version.trim().is_empty()
                {
                    return Err(bad(&format!(
                        "`{name}` `{version}` is not a chart name and version"
                    )));
                }
                Ok(ChartSource::Http {
                    repo,
                    name,
                    version,
                })
            }
            (None, ..) => Err(bad("an HTTP chart needs `repo`, `name` and `version`")),
        }
    }
}

/// Python wheels and sdists for a PEP 503 mirror, picked for one target interpreter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PythonSection {
    /// The PEP 503 / PEP 691 index `{name, version}` entries are resolved through
    /// (`https://pypi.example.org/simple`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<SourceUrl>,
    /// The target interpreter, `3.11`: wheels, `requires-python` and markers are judged
    /// for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_version: Option<String>,
    /// Wheel platform tags of the target (`manylinux2014_x86_64`); one file is carried
    /// for each. Default: from the manifest's `platforms` (`linux/amd64` →
    /// `manylinux2014_x86_64`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// The target's ABI tag (default `cp<XY>` of `python-version`; `cp<XY>t` for a
    /// free-threaded build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abi: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<PythonPackage>,
    /// A hash-pinned `requirements.txt`, relative to the manifest's directory; `lock`
    /// expands it into `packages` and drops this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<String>,
}

/// One Python distribution: `{url, sha256}` or `{name, version}` in a loose manifest;
/// `lock` writes every field it knows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PythonPackage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The wheel or sdist file name (`six-1.16.0-py2.py3-none-any.whl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<SourceUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The index's `requires-python` for the file, served again as
    /// `data-requires-python` on the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_python: Option<String>,
    /// The sha256 of the file's core metadata (`<url>.metadata`, PEP 658), carried and
    /// served beside it when the index offers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_sha256: Option<Sha256Digest>,
}

/// Fetch URLs starting with `prefix` from `url` instead; the canonical URL is kept
/// everywhere else (digest, bundle path, index).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub prefix: String,
    pub url: SourceUrl,
}

/// An absolute `http`/`https` URL with a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceUrl(url::Url);

impl SourceUrl {
    pub fn as_url(&self) -> &url::Url {
        &self.0
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl FromStr for SourceUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let url = url::Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("`{s}`: only http and https URLs are supported"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("`{s}`: URL has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            let mut shown = url.clone();
            let _ = shown.set_username("");
            let _ = shown.set_password(None);
            return Err(format!(
                "`{shown}` is written with a login: secrets never go in a manifest or a lock; \
                 put the login in a netrc file ($NETRC or ~/.netrc: `machine HOST login USER password PASS`)"
            ));
        }
        Ok(SourceUrl(url))
    }
}

impl Serialize for SourceUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SourceUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `os/arch[/variant]`, e.g. `linux/amd64`, `linux/arm/v7`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Whether an image's `os`/`architecture`/`variant` is this platform, with the default
    /// variants filled in as containerd does (`arm64` is `arm64/v8`, `arm` is `arm/v7`).
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let normal = |arch: &str, variant: Option<&str>| -> Option<String> {
            variant.map(str::to_string).or(match arch {
                "arm64" => Some("v8".into()),
                "arm" => Some("v7".into()),
                _ => None,
            })
        };
        self.os == os
            && self.architecture == architecture
            && normal(&self.architecture, self.variant.as_deref()) == normal(architecture, variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid =
            |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(format!(
                "`{s}` is not a platform (expected os/arch[/variant], e.g. linux/amd64)"
            )),
        }
    }
}

/// An image reference `[host[:port]/]path[:tag][@sha256:digest]`, normalised like Docker
/// (`nginx` → `docker.io/library/nginx`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Sha256Digest>,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@sha256:{d}")?;
        }
        Ok(())
    }
}

impl ImageRef {
    /// The name the image has in the bundle's OCI layout (and, later, on the site
    /// registry): `registry/repository:tag`, or `…@sha256:…` when pinned without a tag.
    pub fn layout_name(&self) -> String {
        let mut named = self.clone();
        if named.tag.is_some() {
            named.digest = None;
        }
        named.to_string()
    }
}

impl FromStr for ImageRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`{s}` is not an image reference: {why}");
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Sha256Digest>().map_err(|e| bad(&e))?)),
            None => (s, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => {
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            _ => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(bad("invalid tag"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.chars().all(|ch| {
                        ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch)
                    })
            });
        if !repo_ok {
            return Err(bad("invalid repository name"));
        }
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(Platform);
serde_via_str!(ImageRef);

/// A manifest together with where it came from (relative paths inside it resolve against
/// its directory, SPEC §6).
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    pub manifest: Manifest,
    pub path: PathBuf,
    /// The exact bytes read, hashed into the bundle index.
    pub bytes: Vec<u8>,
}

impl LoadedManifest {
    /// The directory relative paths in the manifest resolve against.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Reads and validates a manifest file (YAML, or JSON for `*.json`).
pub fn load(path: &Path) -> Result<LoadedManifest> {
    let bytes = match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "{}: no such manifest",
                path.display()
            )));
        }
        other => other.at("cannot read manifest", path)?,
    };
    let manifest = parse(&bytes, path)?;
    Ok(LoadedManifest {
        manifest,
        path: path.to_path_buf(),
        bytes,
    })
}

/// Parses manifest bytes; `origin` only names the file in errors and picks the syntax.
pub fn parse(bytes: &[u8], origin: &Path) -> Result<Manifest> {
    let shown = origin.display().to_string();
    let is_json = origin.extension().is_some_and(|e| e == "json");
    let manifest: Manifest = if is_json {
        serde_json::from_slice(bytes).map_err(|e| Error::Manifest {
            path: shown.clone(),
            line: e.line(),
            column: e.column(),
            message: e
                .to_string()
                .split(" at line ")
                .next()
                .unwrap_or("")
                .to_string(),
        })?
    } else {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let (line, column) = position_of(bytes, e.valid_up_to());
            Error::Manifest {
                path: shown.clone(),
                line,
                column,
                message: "not UTF-8 text (the manifest must be UTF-8)".into(),
            }
        })?;
        // YAML allows a byte-order mark at the start.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() {
            return Err(Error::Manifest {
                path: shown,
                line: 1,
                column: 1,
                message: "the manifest is empty (expected `apiVersion: bundle/v1`, `name`, `version`, ...)".into(),
            });
        }
        serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let message = e.to_string();
            let message = message
                .rsplit_once(" at line ")
                .map(|(m, _)| m.to_string())
                .unwrap_or(message);
            // Value checks (digests, URLs) are reported by the parser at the start of their
            // mapping; point at the offending value itself when it can be found below.
            let (line, column) =
                locate_quoted_value(text, &message, line).unwrap_or((line, column));
            Error::Manifest {
                path: shown.clone(),
                line,
                column,
                message,
            }
        })?
    };
    let key_position = |key: &str| find_top_level_key(bytes, key);
    if manifest.api_version != API_VERSION {
        let (line, column) = key_position("apiVersion");
        return Err(Error::Manifest {
            path: shown,
            line,
            column,
            message: format!(
                "apiVersion `{}` is not supported (expected `{API_VERSION}`)",
                manifest.api_version
            ),
        });
    }
    for (what, value) in [("name", &manifest.name), ("version", &manifest.version)] {
        if let Err(why) = crate::bundle::check_release_name(value) {
            let (line, column) = key_position(what);
            return Err(Error::Manifest {
                path: shown,
                line,
                column,
                message: format!(
                    "`{what}` {value:?} {why} (it names the receipt file and goes into generated YAML)"
                ),
            });
        }
    }
    Ok(manifest)
}

/// 1-based line and column of byte `offset`.
fn position_of(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

/// The position of the first `` `value` `` quoted in `message`, searched from `from_line`
/// on, for errors about a value rather than a key.
fn locate_quoted_value(text: &str, message: &str, from_line: usize) -> Option<(usize, usize)> {
    if message.contains("unknown field") || message.contains("missing field") {
        return None;
    }
    let value = message.split('`').nth(1).filter(|v| !v.is_empty())?;
    text.lines()
        .enumerate()
        .skip(from_line.saturating_sub(1))
        .take(64)
        .find_map(|(n, line)| line.find(value).map(|col| (n + 1, col + 1)))
}

/// Where a top-level key is written (for checks made after parsing); 1:1 if not found.
fn find_top_level_key(bytes: &[u8], key: &str) -> (usize, usize) {
    let text = String::from_utf8_lossy(bytes);
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches(['{', ' ', '"', '\u{feff}']);
        if trimmed.starts_with(key)
            && trimmed[key.len()..]
                .trim_start_matches('"')
                .trim_start()
                .starts_with(':')
        {
            return (n + 1, line.len() - trimmed.len() + 1);
        }
    }
    (1, 1)
}

impl Manifest {
    /// Every entry that a lock must pin but that is not pinned, named for the operator.
    pub fn unpinned_entries(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            if f.sha256.is_none() {
                out.push(format!("files[{i}] {} has no sha256", f.url));
            }
        }
        for (i, img) in self.images.iter().enumerate() {
            if img.reference.digest.is_none() {
                out.push(format!(
                    "images[{i}] {} has no @sha256 digest",
                    img.reference
                ));
            }
        }
        for repo in &self.debs {
            for (i, p) in repo.packages.iter().enumerate() {
                if p.sha256.is_none() || p.version.is_none() {
                    out.push(format!(
                        "debs[{}].packages[{i}] {} has no version/sha256",
                        repo.name, p.name
                    ));
                }
            }
        }
        for (i, c) in self.charts.iter().enumerate() {
            match &c.reference {
                Some(r) if !r.contains("@sha256:") => {
                    out.push(format!("charts[{i}] {r} has no @sha256 digest"))
                }
                Some(_) => {}
                None if c.sha256.is_none() || c.url.is_none() => out.push(format!(
                    "charts[{i}] {} {} has no url/sha256",
                    c.name.as_deref().unwrap_or("?"),
                    c.version.as_deref().unwrap_or("?")
                )),
                None => {}
            }
        }
        if let Some(py) = &self.python {
            for (i, p) in py.packages.iter().enumerate() {
                if p.url.is_none() || p.sha256.is_none() {
                    let what = match (&p.name, &p.version) {
                        (Some(n), Some(v)) => format!(" {n}=={v}"),
                        (Some(n), None) => format!(" {n}"),
                        _ => String::new(),
                    };
                    out.push(format!("python.packages[{i}]{what} has no url/sha256"));
                }
            }
            if let Some(file) = &py.requirements {
                out.push(format!(
                    "python.requirements {file} is not expanded into packages"
                ));
            }
        }
        out
    }

    /// Every chart entry is in one of its two forms (exit 2 naming it otherwise), and no two
    /// HTTP charts share a name and version.
    pub fn check_charts(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.charts.iter().enumerate() {
            if let ChartSource::Http { name, version, .. } = c.source(i)?
                && !seen.insert((name, version))
            {
                return Err(Error::Usage(format!(
                    "charts[{i}]: chart {name} {version} is listed twice"
                ))
                .with_hint("list each chart once"));
            }
        }
        Ok(())
    }

    /// Each image must have its own name in the bundle (exit 2 naming both otherwise).
    pub fn check_image_names(&self) -> Result<()> {
        let mut named: std::collections::HashMap<String, &ImageRef> =
            std::collections::HashMap::new();
        for entry in &self.images {
            let name = entry.reference.layout_name();
            if let Some(other) = named.insert(name.clone(), &entry.reference) {
                return Err(Error::Usage(format!(
                    "{other} and {} are both named `{name}` in the bundle",
                    entry.reference
                ))
                .with_hint("list each image once"));
            }
        }
        Ok(())
    }

    /// The `files/<host>/<path>` of every file entry, in order; two URLs that map to the
    /// same path are an error (SPEC §6).
    /// A path that is a file of one URL and a directory of another is an error too (both
    /// can never exist on the web root: SPEC §3).
    pub fn file_dest_paths(&self) -> Result<Vec<String>> {
        let mut seen: std::collections::HashMap<String, &SourceUrl> =
            std::collections::HashMap::new();
        let mut out = Vec::with_capacity(self.files.len());
        for f in &self.files {
            let dest = file_dest_path(&f.url).map_err(Error::Usage)?;
            if let Some(other) = seen.insert(dest.clone(), &f.url) {
                return Err(Error::Usage(format!(
                    "{other} and {} both map to `{dest}` on the web root",
                    f.url
                ))
                .with_hint("keep only one of them"));
            }
            out.push(dest);
        }
        if let Some((file, inside)) = crate::bundle::find_path_clash(out.iter().map(String::as_str))
        {
            return Err(Error::Usage(format!(
                "{} is stored as `{file}`, which {} needs as a directory (`{inside}`): both cannot exist on the web root",
                seen[file], seen[inside]
            ))
            .with_hint("keep only one of them"));
        }
        Ok(out)
    }

    /// Serialises the manifest as YAML: deterministic (fixed field order, no maps).
    pub fn to_yaml(&self) -> Result<String> {
        serde_yaml_ng::to_string(self)
            .map_err(|e| Error::Runtime(format!("cannot write manifest: {e}")))
    }

    /// The URL to fetch `canonical` from, after the `mirrors` rewrite (longest prefix wins).
    pub fn fetch_url(&self, canonical: &SourceUrl) -> Result<SourceUrl> {
        let best = self
            .mirrors
            .iter()
            .filter(|m| canonical.as_str().starts_with(&m.prefix))
            .max_by_key(|m| m.prefix.len());
        match best {
            None => Ok(canonical.clone()),
            Some(m) => {
                let rest = &canonical.as_str()[m.prefix.len()..];
                let base = m.url.as_str();
                let joined = if base.ends_with('/') || rest.is_empty() || rest.starts_with('/') {
                    format!("{base}{rest}")
                } else {
                    format!("{base}/{rest}")
                };
                joined.parse().map_err(|e: String| {
                    Error::Usage(format!("mirror {} for {canonical}: {e}", m.prefix))
                })
            }
        }
    }
}

/// The web-root relative path of a file artifact (SPEC §6): `files/<host>[:port]/<path>`,
/// the port only when it is not the scheme's default, the query dropped, the path
/// percent-decoded and checked so that it can never leave `files/`.
pub fn file_dest_path(url: &SourceUrl) -> Result<String, String> {
    let u = url.as_url();
    let host = u.host_str().unwrap_or_default();
    let host = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let mut parts = vec!["files".to_string(), host];
    let segments: Vec<&str> = u.path().split('/').skip(1).collect();
    if segments.last().is_none_or(|s| s.is_empty()) {
        return Err(format!(
            "{url}: the URL does not name a file (it ends with `/`)"
        ));
    }
    for seg in segments {
        let decoded =
            percent_decode(seg).ok_or_else(|| format!("{url}: path is not valid UTF-8"))?;
        if decoded.is_empty()
            || decoded == "."
            || decoded == ".."
            || decoded.contains(['/', '\\', '\0'])
        {
            return Err(format!(
                "{url}: path segment `{seg}` cannot be stored safely"
            ));
        }
        parts.push(decoded);
    }
    let path = parts.join("/");
    crate::bundle::check_entry_path(&path)
        .map_err(|why| format!("{url}: cannot be stored safely: {why}"))?;
    Ok(path)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> SourceUrl {
        s.parse().unwrap()
    }

    #[test]
    fn dest_paths_follow_wget_naming() {
        assert_eq!(
            file_dest_path(&url(
                "https://dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm"
            ))
            .unwrap(),
            "files/dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm"
        );
        assert_eq!(
            file_dest_path(&url("http://127.0.0.1:8080/a?x=1")).unwrap(),
            "files/127.0.0.1:8080/a"
        );
        assert_eq!(
            file_dest_path(&url("https://h.example.org:443/a")).unwrap(),
            "files/h.example.org/a"
        );
        assert_eq!(
            file_dest_path(&url("https://h/a%2Bb")).unwrap(),
            "files/h/a+b"
        );
        assert!(file_dest_path(&url("https://h/dir/")).is_err());
        assert_eq!(
            file_dest_path(&url("https://h/a/%2e%2e/b")).unwrap(),
            "files/h/b"
        );
        assert!(file_dest_path(&url("https://h/a/%00b")).is_err());
        assert!(file_dest_path(&url("https://h/a%2Fb")).is_err());
    }

    #[test]
    fn platforms_match_with_default_variants() {
        let arm64: Platform = "linux/arm64".parse().unwrap();
        assert!(arm64.matches("linux", "arm64", Some("v8")));
        assert!(arm64.matches("linux", "arm64", None));
        assert!(!arm64.matches("linux", "arm64", Some("v9")));
        let amd64: Platform = "linux/amd64".parse().unwrap();
        assert!(amd64.matches("linux", "amd64", None));
        assert!(!amd64.matches("linux", "arm64", None));
    }

    #[test]
    fn image_refs_normalise_like_docker() {
        let r: ImageRef = "nginx:1.27".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/nginx:1.27");
        let r: ImageRef = "127.0.0.1:5000/test/app:v1".parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "test/app")
        );
        assert!("Bad/Name".parse::<ImageRef>().is_err());
    }

    #[test]
    fn unknown_keys_report_position_and_accepted_keys() {
        let yaml = "apiVersion: bundle/v1\nname: n\nversion: '1'\nfiles:\n  - url: https://example.org/a\n    sha: abc\n";
        let err = parse(yaml.as_bytes(), Path::new("m.yaml")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("m.yaml:6:5: "), "{text}");
        assert!(text.contains("unknown field `sha`"), "{text}");
        assert!(text.contains("`sha256`"), "{text}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn mirrors_rewrite_longest_prefix() {
        let yaml = "apiVersion: bundle/v1\nname: n\nversion: '1'\nmirrors:\n  - {prefix: 'https://dl.k8s.io/', url: 'http://127.0.0.1:1/m/'}\n";
        let m = parse(yaml.as_bytes(), Path::new("m.yaml")).unwrap();
        assert_eq!(
            m.fetch_url(&url("https://dl.k8s.io/release/x"))
                .unwrap()
                .as_str(),
            "http://127.0.0.1:1/m/release/x"
        );
        assert_eq!(
            m.fetch_url(&url("https://github.com/x")).unwrap().as_str(),
            "https://github.com/x"
        );
    }
}
