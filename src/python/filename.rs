//! Distribution file names: a wheel's name, version and tags
//! (`{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl`, PEP 427, each tag part a
//! `.`-separated set) and an sdist's name and version (`{name}-{version}.tar.gz` / `.zip`).

use std::str::FromStr;

use uv_platform_tags::{AbiTag, LanguageTag, PlatformTag};

/// What kind of distribution a file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DistKind {
    Wheel {
        python: Vec<LanguageTag>,
        abi: Vec<AbiTag>,
        platform: Vec<PlatformTag>,
    },
    Sdist,
}

/// A parsed distribution file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistFilename {
    /// Normalised project name.
    pub name: String,
    pub version: pep440_rs::Version,
    pub kind: DistKind,
}

impl DistFilename {
    pub fn is_wheel(&self) -> bool {
        matches!(self.kind, DistKind::Wheel { .. })
    }
}

const SDIST_SUFFIXES: &[&str] = &[".tar.gz", ".zip"];

/// Parses `filename`; `project` (normalised), when known, settles where an sdist's name
/// ends (old sdists have dashes in the name: `python-dateutil-2.8.2.tar.gz`) and is the
/// only project a wheel may name (pip skips another project's files on a page).
/// `Err` says why the name is not a distribution (of `project`).
pub fn parse(filename: &str, project: Option<&str>) -> Result<DistFilename, String> {
    if let Some(stem) = filename.strip_suffix(".whl") {
        let wheel = parse_wheel(stem)?;
        return match project {
            Some(p) if wheel.name != p => Err(format!("a wheel of `{}`, not of `{p}`", wheel.name)),
            _ => Ok(wheel),
        };
    }
    let Some(stem) = SDIST_SUFFIXES.iter().find_map(|s| filename.strip_suffix(s)) else {
        return Err("neither a wheel (.whl) nor an sdist (.tar.gz, .zip)".into());
    };
    // Every dash could end the name; take the split whose name is the project's (or,
    // without one, the last dash, as pip does).
    let splits: Vec<usize> = stem.match_indices('-').map(|(i, _)| i).collect();
    let chosen = match project {
        Some(p) => splits
            .iter()
            .copied()
            .find(|&i| super::normalize(&stem[..i]).is_ok_and(|n| n == p)),
        None => splits.last().copied(),
    };
    let Some(i) = chosen else {
        return Err(match project {
            Some(p) => format!("not an sdist of `{p}`"),
            None => "no `-` between name and version".into(),
        });
    };
    let name = super::normalize(&stem[..i]).map_err(|e| e.to_string())?;
    let version = pep440_rs::Version::from_str(&stem[i + 1..])
        .map_err(|e| format!("version `{}`: {e}", &stem[i + 1..]))?;
    Ok(DistFilename {
        name,
        version,
        kind: DistKind::Sdist,
    })
}

fn parse_wheel(stem: &str) -> Result<DistFilename, String> {
    let parts: Vec<&str> = stem.split('-').collect();
    let (name, version, tags) = match parts.as_slice() {
        [n, v, py, abi, plat] => (*n, *v, [*py, *abi, *plat]),
        [n, v, build, py, abi, plat] => {
            if !build.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(format!("build tag `{build}` does not start with a digit"));
            }
            (*n, *v, [*py, *abi, *plat])
        }
        _ => return Err("a wheel name has 5 or 6 `-`-separated parts".into()),
    };
    let name = super::normalize(name).map_err(|e| e.to_string())?;
    let version =
        pep440_rs::Version::from_str(version).map_err(|e| format!("version `{version}`: {e}"))?;
    fn set<T: FromStr>(part: &str, what: &str) -> Result<Vec<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        part.split('.')
            .map(|t| T::from_str(t).map_err(|e| format!("{what} tag `{t}`: {e}")))
            .collect()
    }
    Ok(DistFilename {
        name,
        version,
        kind: DistKind::Wheel {
            python: set(tags[0], "python")?,
            abi: set(tags[1], "ABI")?,
            platform: set(tags[2], "platform")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheels_give_name_version_and_tag_sets() {
        let d = parse("six-1.16.0-py2.py3-none-any.whl", None).unwrap();
        assert_eq!(d.name, "six");
        assert_eq!(d.version.to_string(), "1.16.0");
        let DistKind::Wheel {
            python,
            abi,
            platform,
        } = d.kind
        else {
            panic!("not a wheel")
        };
        assert_eq!(python.len(), 2);
        assert_eq!(abi, vec![AbiTag::None]);
        assert_eq!(platform, vec![PlatformTag::Any]);
        let d = parse(
            "MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            None,
        )
        .unwrap();
        assert_eq!(d.name, "markupsafe");
        let d = parse("pkg-1.0-1build-py3-none-any.whl", None).unwrap();
        assert_eq!(d.name, "pkg");
        assert!(parse("pkg-1.0-x-py3-none-any.whl", None).is_err());
        assert!(parse("pkg-1.0-py3-none.whl", None).is_err());
        assert!(parse("pkg-1.0-py3-none-nonsense_tag.whl", None).is_err());
        assert!(parse("Pkg-1.0-py3-none-any.whl", Some("pkg")).is_ok());
        let e = parse("evil-1.0-py3-none-any.whl", Some("pkg")).unwrap_err();
        assert!(e.contains("`evil`") && e.contains("`pkg`"), "{e}");
    }

    #[test]
    fn sdists_split_at_the_projects_name() {
        let d = parse("python-dateutil-2.8.2.tar.gz", Some("python-dateutil")).unwrap();
        assert_eq!(
            (d.name.as_str(), d.version.to_string()),
            ("python-dateutil", "2.8.2".into())
        );
        assert_eq!(d.kind, DistKind::Sdist);
        let d = parse("PyYAML-6.0.1.zip", None).unwrap();
        assert_eq!(d.name, "pyyaml");
        assert!(parse("other-1.0.tar.gz", Some("six")).is_err());
        assert!(parse("six-1.0.exe", None).is_err());
        assert!(parse("six-notaversion!.tar.gz", None).is_err());
    }
}
