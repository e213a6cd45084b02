//! A Helm repository's `index.yaml`: reading an upstream one (picking a version by exact
//! match or semver range, as `helm pull --version` does) and writing the site's own, merged
//! with what earlier installs put there.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::ChartMetadata;
use crate::error::{Error, Result};

/// Upper bound on an upstream `index.yaml` (large public repositories are tens of MB).
pub const MAX_INDEX_BYTES: u64 = 128 << 20;

/// One version of a chart as an upstream index lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct IndexVersion {
    #[serde(deserialize_with = "scalar")]
    pub version: String,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub digest: Option<String>,
}

#[derive(Deserialize)]
struct UpstreamIndex {
    #[serde(default)]
    entries: BTreeMap<String, Vec<IndexVersion>>,
}

fn scalar<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(serde::de::Error::custom("version must be a scalar")),
    }
}

/// The versions an upstream index lists for `name` (`None` when it has no such chart).
pub fn versions_of(
    index_yaml: &[u8],
    name: &str,
    origin: &str,
) -> Result<Option<Vec<IndexVersion>>> {
    let parsed: UpstreamIndex = super::from_yaml(index_yaml).map_err(|e| {
        Error::Verify(format!("{origin}: not a Helm repository index: {e}"))
            .with_hint("the repo URL must be the directory holding index.yaml")
    })?;
    Ok(parsed.entries.get(name).cloned())
}

/// A version string as semver (`v1.2.3`, `1.2` read as `1.2.0`), for ordering and ranges.
fn semver_of(version: &str) -> Option<semver::Version> {
    let v = version.trim().trim_start_matches(['v', 'V']);
    if let Ok(parsed) = semver::Version::parse(v) {
        return Some(parsed);
    }
    // `1.2` or `1`: padded as Masterminds/semver (Helm's) does.
    let (core, rest) = match v.find(['-', '+']) {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let parts = core.split('.').count();
    if parts == 0 || parts > 2 || core.split('.').any(|p| p.parse::<u64>().is_err()) {
        return None;
    }
    let padded = format!("{core}{}{rest}", ".0".repeat(3 - parts));
    semver::Version::parse(&padded).ok()
}

/// A Helm (Masterminds) constraint as alternatives of `semver` requirements:
/// `||` separates alternatives, whitespace or commas separate the comparators of one,
/// `a - b` is a closed range, a bare version is exact. `None` when it is not a range.
fn constraint_of(wanted: &str) -> Option<Vec<semver::VersionReq>> {
    let mut alternatives = Vec::new();
    for alt in wanted.split("||") {
        let tokens: Vec<&str> = alt
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .collect();
        let mut comparators = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let mut token = tokens[i].to_string();
            if tokens.get(i + 1) == Some(&"-") && i + 2 < tokens.len() {
                comparators.push(format!(">={}", strip_v(&token)));
                comparators.push(format!("<={}", strip_v(tokens[i + 2])));
                i += 3;
                continue;
            }
            // `>= 1.2`: an operator on its own takes the next token.
            if token.chars().all(|c| "<>=~^!".contains(c)) && i + 1 < tokens.len() {
                token.push_str(tokens[i + 1]);
                i += 1;
            }
            let op_len = token
                .find(|c: char| !"<>=~^!".contains(c))
                .unwrap_or(token.len());
            let (op, version) = token.split_at(op_len);
            if op == "!=" {
                return None;
            }
            let version = strip_v(version);
            let op = if op.is_empty() { "=" } else { op };
            comparators.push(format!("{op}{version}"));
            i += 1;
        }
        if comparators.is_empty() {
            return None;
        }
        alternatives.push(semver::VersionReq::parse(&comparators.join(", ")).ok()?);
    }
    Some(alternatives)
}

fn strip_v(s: &str) -> &str {
    s.strip_prefix(['v', 'V']).unwrap_or(s)
}

/// Picks the version `wanted` names: the exact string (with or without a leading `v`), else
/// the highest version a semver range admits. The error lists the nearest versions.
pub fn select<'a>(
    versions: &'a [IndexVersion],
    wanted: &str,
    what: &str,
) -> Result<&'a IndexVersion> {
    let wanted = wanted.trim();
    if let Some(exact) = versions
        .iter()
        .find(|v| v.version == wanted || strip_v(&v.version) == strip_v(wanted))
    {
        return Ok(exact);
    }
    let best = constraint_of(wanted).and_then(|alternatives| {
        versions
            .iter()
            .filter_map(|v| Some((semver_of(&v.version)?, v)))
            .filter(|(s, _)| alternatives.iter().any(|req| req.matches(s)))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, v)| v)
    });
    best.ok_or_else(|| {
        Error::Usage(format!(
            "{what}: no version matches `{wanted}`; nearest available: {}",
            nearest(versions, wanted).join(", ")
        ))
        .with_hint("pick one of the listed versions (or a range such as `~1.2`) in the manifest")
    })
}

/// Up to three versions either side of where `wanted` would sort (the newest ones when it
/// has no version number in it).
fn nearest(versions: &[IndexVersion], wanted: &str) -> Vec<String> {
    let mut sorted: Vec<(semver::Version, &str)> = versions
        .iter()
        .filter_map(|v| Some((semver_of(&v.version)?, v.version.as_str())))
        .collect();
    sorted.sort();
    sorted.dedup_by(|a, b| a.1 == b.1);
    if sorted.is_empty() {
        return vec!["(none)".into()];
    }
    let probe = wanted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '+'))
        .find_map(semver_of);
    let at = match probe {
        Some(p) => sorted.partition_point(|(s, _)| *s < p),
        None => sorted.len(),
    };
    let from = at.saturating_sub(3);
    let to = (at + 3).min(sorted.len());
    sorted[from..to]
        .iter()
        .map(|(_, v)| v.to_string())
        .collect()
}

/// One chart as the site's index lists it.
pub struct SiteChart<'a> {
    pub meta: &'a ChartMetadata,
    pub digest: crate::digest::Sha256Digest,
    /// RFC 3339.
    pub created: &'a str,
}

fn entry_value(chart: &SiteChart<'_>) -> Result<Value> {
    let mut entry = match serde_yaml_ng::to_value(chart.meta) {
        Ok(Value::Mapping(m)) => m,
        _ => return Err(Error::Runtime("cannot render a chart index entry".into())),
    };
    entry.insert("created".into(), chart.created.into());
    entry.insert("digest".into(), chart.digest.hex().into());
    entry.insert(
        "urls".into(),
        Value::Sequence(vec![chart.meta.file_name().into()]),
    );
    Ok(Value::Mapping(entry))
}

fn field<'v>(entry: &'v Value, key: &str) -> Option<&'v str> {
    entry.get(key).and_then(Value::as_str)
}

/// The entries of the site's `charts/index.yaml` as earlier installs left it. Anything
/// but a Helm index (a mapping whose `entries`, if any, map names to lists) is refused
/// rather than replaced: it is someone else's file.
pub fn existing_entries(bytes: &[u8]) -> Result<BTreeMap<String, Vec<Value>>> {
    let not_an_index = |why: String| {
        Error::Runtime(format!("not a Helm index: {why}"))
        .with_hint(
            "move it away (the install rebuilds it from this bundle's charts), then install again; nothing was installed",
        )
    };
    let parsed: Value = super::from_yaml(bytes).map_err(not_an_index)?;
    let Value::Mapping(top) = parsed else {
        return Err(not_an_index("not a YAML mapping".into()));
    };
    let mut entries = BTreeMap::new();
    match top.get("entries") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(map)) => {
            for (name, list) in map {
                if let (Value::String(name), Value::Sequence(list)) = (name, list) {
                    entries.insert(name.clone(), list.clone());
                }
            }
        }
        Some(_) => return Err(not_an_index("`entries` is not a mapping".into())),
    }
    Ok(entries)
}

/// The site's `charts/index.yaml`: the one already there (`existing`, from earlier
/// installs) with this install's charts added or replaced by name and version. An entry
/// whose digest did not change is kept as it was (its `created` too), so an identical
/// re-install renders the same bytes. Versions are listed newest first, as Helm does.
pub fn site_index(existing: Option<&[u8]>, charts: &[SiteChart<'_>]) -> Result<Vec<u8>> {
    let mut entries = match existing {
        Some(bytes) => existing_entries(bytes)?,
        None => BTreeMap::new(),
    };
    for chart in charts {
        let list = entries.entry(chart.meta.name.clone()).or_default();
        let digest = chart.digest.hex();
        match list
            .iter()
            .position(|e| field(e, "version") == Some(chart.meta.version.as_str()))
        {
            Some(i) if field(&list[i], "digest") == Some(digest.as_str()) => {}
            Some(i) => list[i] = entry_value(chart)?,
            None => list.push(entry_value(chart)?),
        }
    }
    let mut generated = String::new();
    let mut rendered = Mapping::new();
    for (name, mut list) in entries {
        list.sort_by(|a, b| {
            let key = |e: &Value| field(e, "version").and_then(semver_of);
            key(b).cmp(&key(a))
        });
        for e in &list {
            if let Some(c) = field(e, "created")
                && c > generated.as_str()
            {
                generated = c.to_string();
            }
        }
        rendered.insert(name.into(), Value::Sequence(list));
    }
    let mut index = Mapping::new();
    index.insert("apiVersion".into(), "v1".into());
    index.insert("entries".into(), Value::Mapping(rendered));
    index.insert("generated".into(), generated.into());
    serde_yaml_ng::to_string(&index)
        .map(String::into_bytes)
        .map_err(|e| Error::Runtime(format!("cannot render charts/index.yaml: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(list: &[&str]) -> Vec<IndexVersion> {
        list.iter()
            .map(|v| IndexVersion {
                version: v.to_string(),
                urls: vec![],
                digest: None,
            })
            .collect()
    }

    fn pick(list: &[&str], wanted: &str) -> std::result::Result<String, String> {
        let v = versions(list);
        select(&v, wanted, "demo")
            .map(|v| v.version.clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn exact_and_ranges() {
        let all = ["1.1.0", "1.2.0", "1.2.5", "1.3.0", "2.0.0-rc.1", "v2.1.0"];
        assert_eq!(pick(&all, "1.2.0").unwrap(), "1.2.0");
        assert_eq!(pick(&all, "v1.2.0").unwrap(), "1.2.0");
        assert_eq!(pick(&all, "2.1.0").unwrap(), "v2.1.0");
        assert_eq!(pick(&all, "~1.2").unwrap(), "1.2.5");
        assert_eq!(pick(&all, ">=1.2 <2").unwrap(), "1.3.0");
        assert_eq!(pick(&all, ">= 1.2, < 1.3").unwrap(), "1.2.5");
        assert_eq!(pick(&all, "^1").unwrap(), "1.3.0");
        assert_eq!(pick(&all, "1.2.x").unwrap(), "1.2.5");
        assert_eq!(pick(&all, "1.1.0 - 1.2.0").unwrap(), "1.2.0");
        assert_eq!(pick(&all, "~1.1 || ~2.1").unwrap(), "v2.1.0");
        // Pre-releases only when asked for.
        assert_eq!(pick(&all, ">=2.0.0-rc.0 <2.0.1").unwrap(), "2.0.0-rc.1");
    }

    #[test]
    fn nothing_matching_lists_the_nearest() {
        let all = [
            "1.1.0", "1.2.0", "1.2.5", "1.3.0", "1.4.0", "1.5.0", "3.0.0",
        ];
        let e = pick(&all, "1.2.7").unwrap_err();
        assert!(e.contains("no version matches `1.2.7`"), "{e}");
        assert!(e.contains("1.2.5, 1.3.0, 1.4.0"), "{e}");
        assert!(!e.contains("3.0.0"), "{e}");
        let e = pick(&all, "~9.9").unwrap_err();
        assert!(e.contains("1.4.0, 1.5.0, 3.0.0"), "{e}");
        let e = pick(&all, "latest").unwrap_err();
        assert!(e.contains("3.0.0"), "{e}");
    }

    #[test]
    fn site_index_merges_and_keeps_unchanged_entries() {
        let meta = |name: &str, version: &str| ChartMetadata {
            name: name.into(),
            version: version.into(),
            api_version: Some("v2".into()),
            app_version: Some("1.0".into()),
            description: Some("d".into()),
            chart_type: Some("application".into()),
            home: None,
            sources: vec![],
            keywords: vec![],
            maintainers: vec![],
            icon: None,
            condition: None,
            tags: None,
            deprecated: false,
            annotations: None,
            kube_version: None,
            dependencies: vec![],
        };
        let a = meta("demo", "1.2.5");
        let d1 = crate::digest::Sha256Digest::of_bytes(b"a");
        let first = site_index(
            None,
            &[SiteChart {
                meta: &a,
                digest: d1,
                created: "2026-01-01T00:00:00Z",
            }],
        )
        .unwrap();
        let text = String::from_utf8(first.clone()).unwrap();
        assert!(text.contains("apiVersion: v1"), "{text}");
        assert!(text.contains("- demo-1.2.5.tgz"), "{text}");
        assert!(text.contains(&d1.hex()), "{text}");
        // Same chart again, later: unchanged bytes.
        let again = site_index(
            Some(&first),
            &[SiteChart {
                meta: &a,
                digest: d1,
                created: "2027-01-01T00:00:00Z",
            }],
        )
        .unwrap();
        assert_eq!(again, first);
        // Another version and another chart: all listed, newest first.
        let b = meta("demo", "1.10.0");
        let c = meta("other", "0.1.0");
        let merged = site_index(
            Some(&first),
            &[
                SiteChart {
                    meta: &b,
                    digest: d1,
                    created: "2027-01-01T00:00:00Z",
                },
                SiteChart {
                    meta: &c,
                    digest: d1,
                    created: "2027-01-01T00:00:00Z",
                },
            ],
        )
        .unwrap();
        let text = String::from_utf8(merged).unwrap();
        let newer = text.find("version: 1.10.0").unwrap();
        let older = text.find("version: 1.2.5").unwrap();
        assert!(newer < older, "{text}");
        assert!(text.contains("other-0.1.0.tgz"), "{text}");
        assert!(
            text.contains("generated: 2027-01-01T00:00:00Z")
                || text.contains("generated: '2027-01-01T00:00:00Z'"),
            "{text}"
        );
    }
}
