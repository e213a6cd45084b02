//! The target a lock picks files for: a CPython version, its ABI and the wheel platform
//! tags of the site's machines. Which wheels fit, and in what order of preference, is
//! pip's tag priority as `uv-platform-tags` computes it (interpreter-specific
//! `cpXY-cpXY-plat` first, then `abi3`, then `none`, then `py3-none-any`); manylinux tags
//! follow PEP 600 (`manylinux2014` is `manylinux_2_17` and accepts every older glibc tag
//! and the legacy aliases). The same target gives the marker environment requirement
//! lines are evaluated in.

use std::str::FromStr;

use pep508_rs::{MarkerEnvironment, MarkerEnvironmentBuilder};
use uv_platform_tags::{
    Arch, BinaryFormat, Os, Platform, PlatformTag, TagPriority, Tags, TagsOptions,
};

use super::filename::{DistFilename, DistKind};
use crate::error::{Error, Result};

/// One platform of the target.
pub struct TargetPlatform {
    /// As written in the manifest (`manylinux2014_x86_64`, `any`).
    pub tag: String,
    /// `None` for `any`: pure wheels and sdists only.
    tags: Option<Tags>,
    /// Tags of a CPython on Linux x86_64, what `any` judges pure wheels with.
    pure: Tags,
    pub markers: MarkerEnvironment,
}

/// The interpreter and machines a lock picks files for.
pub struct Target {
    /// `3.11` or `3.11.7`, as written.
    pub python_version: String,
    pub python: pep440_rs::Version,
    /// `cp311` (or `cp311t`).
    pub abi: String,
    pub platforms: Vec<TargetPlatform>,
}

/// Platform tags a `platforms` entry may name, for errors.
const ACCEPTED: &str = "manylinux2014_x86_64, manylinux_2_28_aarch64, musllinux_1_2_x86_64, \
                        linux_x86_64, macosx_11_0_arm64, win_amd64 or any";

impl Target {
    /// The target of a `python` section: `python_version` (`3.11`), wheel platform tags,
    /// and an optional ABI (`cp311`, `cp311t`).
    pub fn new(python_version: &str, platforms: &[String], abi: Option<&str>) -> Result<Target> {
        let bad_version = || {
            Error::Usage(format!(
                "python.python-version `{python_version}`: expected a CPython version such as 3.11"
            ))
        };
        let numbers: Vec<u8> = python_version
            .split('.')
            .map(|p| p.parse::<u8>().map_err(|_| bad_version()))
            .collect::<Result<_>>()?;
        let (major, minor, patch) = match numbers.as_slice() {
            [3, minor] => (3, *minor, None),
            [3, minor, patch] => (3, *minor, Some(*patch)),
            _ => return Err(bad_version()),
        };
        let default_abi = format!("cp{major}{minor}");
        let abi = abi.unwrap_or(&default_abi).to_string();
        let gil_disabled = if abi == default_abi {
            false
        } else if abi == format!("{default_abi}t") {
            true
        } else {
            return Err(Error::Usage(format!(
                "python.abi `{abi}`: for python {major}.{minor} it is {default_abi} (or {default_abi}t, free-threaded)"
            )));
        };
        let options = TagsOptions {
            manylinux_compatible: true,
            gil_disabled,
            is_cross: true,
            ..TagsOptions::default()
        };
        let tags_for = |platform: Platform| {
            Tags::from_env(platform, (major, minor), "cpython", (major, minor), options)
                .map_err(|e| Error::Usage(format!("python target: {e}")))
        };
        let pure = tags_for(Platform::new(
            Os::Manylinux {
                major: 2,
                minor: 17,
            },
            Arch::X86_64,
        ))?;
        let full = format!("{major}.{minor}.{}", patch.unwrap_or(0));
        let short = format!("{major}.{minor}");
        let mut out = Vec::new();
        for tag in platforms {
            let (tags, os, arch) = if tag == "any" {
                (
                    None,
                    Os::Manylinux {
                        major: 2,
                        minor: 17,
                    },
                    Arch::X86_64,
                )
            } else {
                let (os, arch, manylinux) = platform_of(tag)?;
                let mut platform_options = options;
                platform_options.manylinux_compatible = manylinux;
                let tags = Tags::from_env(
                    Platform::new(os.clone(), arch),
                    (major, minor),
                    "cpython",
                    (major, minor),
                    platform_options,
                )
                .map_err(|e| Error::Usage(format!("python.platforms `{tag}`: {e}")))?;
                (Some(tags), os, arch)
            };
            let (sys_platform, system, os_name) = match os {
                Os::Macos { .. } => ("darwin", "Darwin", "posix"),
                Os::Windows => ("win32", "Windows", "nt"),
                _ => ("linux", "Linux", "posix"),
            };
            let machine = match (&os, arch) {
                (Os::Windows, Arch::X86_64) => "AMD64".to_string(),
                (Os::Windows, Arch::Aarch64) => "ARM64".to_string(),
                (Os::Macos { .. }, Arch::Aarch64) => "arm64".to_string(),
                (_, a) => a.name().to_string(),
            };
            let markers = MarkerEnvironment::try_from(MarkerEnvironmentBuilder {
                implementation_name: "cpython",
                implementation_version: &full,
                os_name,
                platform_machine: &machine,
                platform_python_implementation: "CPython",
                platform_release: "",
                platform_system: system,
                platform_version: "",
                python_full_version: &full,
                python_version: &short,
                sys_platform,
            })
            .map_err(|e| Error::Usage(format!("python target markers: {e}")))?;
            out.push(TargetPlatform {
                tag: tag.clone(),
                tags,
                pure: pure.clone(),
                markers,
            });
        }
        if out.is_empty() {
            return Err(Error::Usage(format!(
                "python.platforms is empty: name the wheel platform tags of the site ({ACCEPTED})"
            )));
        }
        Ok(Target {
            python_version: python_version.to_string(),
            python: pep440_rs::Version::from_str(&full).map_err(|_| bad_version())?,
            abi,
            platforms: out,
        })
    }

    /// Whether a `requires-python` specifier admits the target interpreter; one that does
    /// not parse is ignored (as pip ignores it).
    pub fn admits(&self, requires_python: &str) -> bool {
        match pep440_rs::VersionSpecifiers::from_str(requires_python) {
            Ok(spec) => spec.contains(&self.python),
            Err(_) => true,
        }
    }

    /// `python 3.11 (cp311)`, for messages.
    pub fn describe(&self) -> String {
        format!("python {} ({})", self.python_version, self.abi)
    }
}

impl TargetPlatform {
    /// How much the platform wants this file: `Some` priority (higher is better) for a
    /// wheel that installs there, `None` for a wheel that does not and for sdists.
    pub fn wheel_priority(&self, dist: &DistFilename) -> Option<TagPriority> {
        let DistKind::Wheel {
            python,
            abi,
            platform,
        } = &dist.kind
        else {
            return None;
        };
        let compatibility = match &self.tags {
            Some(tags) => tags.compatibility(python.iter(), abi.iter(), platform.iter()),
            None if platform.contains(&PlatformTag::Any) => {
                self.pure
                    .compatibility(python.iter(), abi.iter(), [PlatformTag::Any].iter())
            }
            None => return None,
        };
        match compatibility {
            uv_platform_tags::TagCompatibility::Compatible(p) => Some(p),
            uv_platform_tags::TagCompatibility::Incompatible(_) => None,
        }
    }
}

/// The operating system and architecture a platform tag names, and whether manylinux
/// tags apply (`linux_x86_64` alone takes only `linux_x86_64` wheels).
fn platform_of(tag: &str) -> Result<(Os, Arch, bool)> {
    let refuse = |why: &str| {
        Error::Usage(format!(
            "python.platforms `{tag}`: {why} (accepted: {ACCEPTED})"
        ))
    };
    let parsed = PlatformTag::from_str(tag).map_err(|e| refuse(&e.to_string()))?;
    let linux = |major, minor| Os::Manylinux { major, minor };
    Ok(match parsed {
        PlatformTag::Manylinux { major, minor, arch } => (linux(major, minor), arch, true),
        PlatformTag::Manylinux1 { arch } => (linux(2, 5), arch, true),
        PlatformTag::Manylinux2010 { arch } => (linux(2, 12), arch, true),
        PlatformTag::Manylinux2014 { arch } => (linux(2, 17), arch, true),
        PlatformTag::Linux { arch } => (linux(2, 17), arch, false),
        PlatformTag::Musllinux { major, minor, arch } => {
            (Os::Musllinux { major, minor }, arch, false)
        }
        PlatformTag::Macos {
            major,
            minor,
            binary_format,
        } => {
            let arch = match binary_format {
                BinaryFormat::Arm64 => Arch::Aarch64,
                BinaryFormat::X86_64 => Arch::X86_64,
                _ => return Err(refuse("name a single architecture, arm64 or x86_64")),
            };
            (Os::Macos { major, minor }, arch, false)
        }
        PlatformTag::WinAmd64 => (Os::Windows, Arch::X86_64, false),
        PlatformTag::WinArm64 => (Os::Windows, Arch::Aarch64, false),
        PlatformTag::Win32 => (Os::Windows, Arch::X86, false),
        _ => return Err(refuse("not a platform this tool picks wheels for")),
    })
}

/// The default wheel platform of an image platform (`linux/amd64` →
/// `manylinux2014_x86_64`), for a `python` section without `platforms`.
pub fn default_platform(os: &str, architecture: &str) -> Option<&'static str> {
    match (os, architecture) {
        ("linux", "amd64") => Some("manylinux2014_x86_64"),
        ("linux", "arm64") => Some("manylinux2014_aarch64"),
        ("linux", "ppc64le") => Some("manylinux2014_ppc64le"),
        ("linux", "s390x") => Some("manylinux2014_s390x"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::filename::parse;
    use super::*;

    fn target(platforms: &[&str]) -> Target {
        let platforms: Vec<String> = platforms.iter().map(|s| s.to_string()).collect();
        Target::new("3.11", &platforms, None).unwrap()
    }

    fn priority(t: &Target, file: &str) -> Option<TagPriority> {
        t.platforms[0].wheel_priority(&parse(file, None).unwrap())
    }

    #[test]
    fn manylinux2014_takes_older_glibc_tags_and_aliases_not_newer() {
        let t = target(&["manylinux2014_x86_64"]);
        for ok in [
            "m-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "m-1-cp311-cp311-manylinux_2_5_x86_64.manylinux1_x86_64.whl",
            "m-1-cp311-cp311-manylinux2010_x86_64.whl",
            "m-1-cp37-abi3-manylinux_2_12_x86_64.whl",
            "m-1-py3-none-any.whl",
            "m-1-py2.py3-none-any.whl",
        ] {
            assert!(priority(&t, ok).is_some(), "{ok}");
        }
        for no in [
            "m-1-cp311-cp311-manylinux_2_28_x86_64.whl",
            "m-1-cp311-cp311-manylinux2014_aarch64.whl",
            "m-1-cp311-cp311-musllinux_1_1_x86_64.whl",
            "m-1-cp310-cp310-manylinux2014_x86_64.whl",
            "m-1-cp311-cp311-win_amd64.whl",
            "m-1-py2-none-any.whl",
        ] {
            assert!(priority(&t, no).is_none(), "{no}");
        }
    }

    #[test]
    fn the_most_specific_wheel_ranks_first() {
        let t = target(&["manylinux2014_x86_64"]);
        let ranked = [
            "m-1-cp311-cp311-manylinux2014_x86_64.whl",
            "m-1-cp39-abi3-manylinux2014_x86_64.whl",
            "m-1-py3-none-manylinux2014_x86_64.whl",
            "m-1-cp311-none-any.whl",
            "m-1-py3-none-any.whl",
        ];
        let p: Vec<TagPriority> = ranked.iter().map(|f| priority(&t, f).unwrap()).collect();
        assert!(p.windows(2).all(|w| w[0] > w[1]), "{p:?}");
    }

    #[test]
    fn any_takes_pure_wheels_only_and_sdists_never_rank() {
        let t = target(&["any"]);
        assert!(priority(&t, "m-1-py3-none-any.whl").is_some());
        assert!(priority(&t, "m-1-cp311-cp311-manylinux2014_x86_64.whl").is_none());
        assert!(priority(&t, "m-1.tar.gz").is_none());
    }

    #[test]
    fn requires_python_and_bad_targets() {
        let t = target(&["musllinux_1_2_aarch64"]);
        assert!(t.admits(">=3.7"));
        assert!(!t.admits(">=3.12"));
        assert!(t.admits("not a specifier"));
        assert!(Target::new("2.7", &["any".into()], None).is_err());
        assert!(Target::new("3.11", &["beos_x86".into()], None).is_err());
        assert!(Target::new("3.11", &["any".into()], Some("cp310")).is_err());
        assert!(Target::new("3.11", &[], None).is_err());
        let t = Target::new("3.11.7", &["win_amd64".into()], Some("cp311")).unwrap();
        assert_eq!(t.describe(), "python 3.11.7 (cp311)");
    }
}
