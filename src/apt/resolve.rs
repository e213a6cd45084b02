//! The packages a manifest names and their dependency closure over every carried
//! repository: `Pre-Depends` and `Depends`, alternatives in order, versioned constraints
//! (Debian ordering), `Provides` and virtual packages, `Architecture: all`, multi-arch
//! qualifiers. What no carried repository provides is *external* (expected from the
//! site's own OS mirror, SPEC §6), as is the base system unless the closure is `full`:
//! `Priority: required` and `Essential: yes` packages and what they depend on (libc6 is
//! `optional` in Debian 12, but every Debian system has it because dpkg needs it).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use debversion::Version;

use super::packages::BinaryPackage;
use super::relation::{self, Relation};
use crate::error::{Error, Result};

/// How far `lock` follows dependencies of a repository's packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Closure {
    /// Every dependency, `Priority: required` ones included.
    Full,
    /// Every dependency except the base system (`Priority: required`, `Essential: yes`
    /// and their dependencies: every site has those).
    #[default]
    Default,
    /// Only the packages named.
    None,
}

/// A package the manifest names.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub name: String,
    pub version: Option<String>,
    pub arch: Option<String>,
    pub repo: usize,
}

/// A dependency left to the site's OS mirror.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct External {
    /// The dependency as control data writes it (`libc6 (>= 2.34)`, `a | b`).
    pub relation: String,
    /// The carried package that needs it (`jq 1.6-2.1`).
    pub required_by: String,
    /// Why it is not carried: `not in the carried repositories` or `priority required`.
    pub reason: String,
}

/// What the closure selected.
pub struct Resolution {
    /// Indexes into the universe, in a deterministic order.
    pub selected: Vec<usize>,
    pub external: Vec<External>,
}

/// Every package of every carried repository.
pub struct Universe {
    packages: Vec<BinaryPackage>,
    by_name: HashMap<String, Vec<usize>>,
    providers: HashMap<String, Vec<usize>>,
    /// Names of the base system: required and essential packages and their dependencies.
    base: BTreeSet<String>,
}

impl Universe {
    pub fn new(packages: Vec<BinaryPackage>) -> Universe {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut providers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in packages.iter().enumerate() {
            by_name.entry(p.name.clone()).or_default().push(i);
            for provided in &p.provides {
                providers.entry(provided.name.clone()).or_default().push(i);
            }
        }
        let mut universe = Universe {
            packages,
            by_name,
            providers,
            base: BTreeSet::new(),
        };
        universe.base = universe.base_system();
        universe
    }

    /// Required and essential packages and the names their dependencies reach (any
    /// alternative, any version: an over-approximation is what a base system has).
    fn base_system(&self) -> BTreeSet<String> {
        let mut base = BTreeSet::new();
        let mut queue: VecDeque<&str> = self
            .packages
            .iter()
            .filter(|p| p.essential || p.priority.as_deref() == Some("required"))
            .map(|p| p.name.as_str())
            .collect();
        while let Some(name) = queue.pop_front() {
            if !base.insert(name.to_string()) {
                continue;
            }
            for &i in self.by_name.get(name).into_iter().flatten() {
                let p = &self.packages[i];
                for group in p.pre_depends.iter().chain(&p.depends) {
                    if let Some(first) = group.first() {
                        queue.push_back(first.name.as_str());
                    }
                }
            }
        }
        base
    }

    pub fn package(&self, i: usize) -> &BinaryPackage {
        &self.packages[i]
    }

    /// Names close to `name` (for "no such package" errors).
    fn nearest(&self, name: &str) -> Vec<String> {
        let mut scored: Vec<(usize, &String)> = self
            .by_name
            .keys()
            .map(|k| (distance(name, k), k))
            .filter(|(d, k)| *d <= 3.max(name.len() / 3) || k.contains(name))
            .collect();
        scored.sort();
        scored.into_iter().take(5).map(|(_, k)| k.clone()).collect()
    }
}

/// Levenshtein distance (short names only: package names).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// Whether a package of `arch` can satisfy a dependency of a package of `wanted_arch`.
fn arch_fits(candidate: &BinaryPackage, wanted_arch: &str, relation: &Relation) -> bool {
    if candidate.arch == "all" || candidate.arch == wanted_arch {
        return true;
    }
    // `foo:any` takes any architecture of a `Multi-Arch: allowed` package.
    relation.qualifier.as_deref() == Some("any")
        && candidate.multi_arch.as_deref() == Some("allowed")
}

struct Resolver<'a> {
    universe: &'a Universe,
    closures: &'a [Closure],
    default_arch: &'a [String],
    /// (name, arch) → selected package.
    chosen: BTreeMap<(String, String), usize>,
    /// Why each selected package is there (for conflict messages).
    because: HashMap<usize, String>,
    external: BTreeSet<External>,
    queue: VecDeque<usize>,
}

impl Resolver<'_> {
    fn describe(&self, i: usize) -> String {
        let p = self.universe.package(i);
        format!("{} {} ({})", p.name, p.version, p.arch)
    }

    fn chain(&self, i: usize) -> String {
        let mut links = vec![self.describe(i)];
        let mut at = i;
        while let Some(why) = self.because.get(&at) {
            links.push(why.clone());
            match self.chosen.values().find(|&&c| &self.describe(c) == why) {
                Some(&next) if links.len() < 16 => at = next,
                _ => break,
            }
        }
        links.join(" <- ")
    }

    fn select(&mut self, i: usize, because: Option<String>) -> Result<()> {
        let p = self.universe.package(i);
        let key = (p.name.clone(), p.arch.clone());
        match self.chosen.get(&key) {
            Some(&other) if other == i => Ok(()),
            Some(&other) => Err(Error::Usage(format!(
                "the carried repositories need two versions of {}: {} and {}",
                p.name,
                self.chain(other),
                because
                    .map(|b| format!("{} <- {b}", self.describe(i)))
                    .unwrap_or_else(|| self.describe(i))
            ))
            .with_hint("pin compatible versions in the manifest, or set `closure: none` and list the packages yourself")),
            None => {
                self.chosen.insert(key, i);
                if let Some(b) = because {
                    self.because.insert(i, b);
                }
                self.queue.push_back(i);
                Ok(())
            }
        }
    }

    /// The package that satisfies `relation` for a dependant of `arch`: one already
    /// chosen, else the highest version among real packages, else among providers.
    fn satisfy(&self, relation: &Relation, arch: &str) -> (Option<usize>, bool) {
        let fits = |&i: &usize| {
            let c = self.universe.package(i);
            arch_fits(c, arch, relation) && relation.allows(&c.version)
        };
        let provides = |&i: &usize| {
            let c = self.universe.package(i);
            (c.arch == "all" || c.arch == arch)
                && c.provides.iter().any(|p| {
                    p.name == relation.name
                        && match (&relation.constraint, &p.version) {
                            (None, _) => true,
                            (Some(_), Some(v)) => relation.allows(v),
                            (Some(_), None) => false,
                        }
                })
        };
        let real = self.universe.by_name.get(&relation.name);
        let virtual_ = self.universe.providers.get(&relation.name);
        let chosen = |i: &usize| self.chosen.values().any(|c| c == i);
        if let Some(&i) = real
            .into_iter()
            .flatten()
            .chain(virtual_.into_iter().flatten())
            .find(|i| chosen(i) && (fits(i) || provides(i)))
        {
            return (Some(i), true);
        }
        let best = |list: Option<&Vec<usize>>, ok: &dyn Fn(&usize) -> bool| {
            list.into_iter()
                .flatten()
                .copied()
                .filter(|i| ok(i))
                .max_by(|a, b| {
                    let (pa, pb) = (self.universe.package(*a), self.universe.package(*b));
                    pa.version.cmp(&pb.version).then(pb.repo.cmp(&pa.repo))
                })
        };
        (
            best(real, &fits).or_else(|| best(virtual_, &provides)),
            false,
        )
    }

    fn follow(&mut self, i: usize) -> Result<()> {
        let p = self.universe.package(i).clone();
        if self.closures.get(p.repo).copied().unwrap_or_default() == Closure::None {
            return Ok(());
        }
        let arch = if p.arch == "all" {
            self.default_arch
                .first()
                .cloned()
                .unwrap_or_else(|| "all".into())
        } else {
            p.arch.clone()
        };
        let me = self.describe(i);
        for group in p.pre_depends.iter().chain(&p.depends) {
            // An alternative already chosen satisfies the group; else the first one the
            // carried repositories can satisfy.
            let answers: Vec<(Option<usize>, bool)> =
                group.iter().map(|r| self.satisfy(r, &arch)).collect();
            let found = if answers.iter().any(|(c, chosen)| c.is_some() && *chosen) {
                Some(None)
            } else {
                answers.iter().find_map(|(c, _)| c.map(Some))
            };
            if found.is_none()
                && let Some(known) = group
                    .iter()
                    .find(|r| self.universe.by_name.contains_key(&r.name))
            {
                // The carried repositories have the package, just not a version (or an
                // architecture) that fits: a conflict inside them, not a dependency for
                // the site's mirror.
                let have: BTreeSet<String> = self.universe.by_name[&known.name]
                    .iter()
                    .map(|&c| {
                        let c = self.universe.package(c);
                        format!("{} ({})", c.version, c.arch)
                    })
                    .collect();
                return Err(Error::Usage(format!(
                    "{} needs {}, but the carried repositories have {} only in {}",
                    self.chain(i),
                    relation::show(group),
                    known.name,
                    have.into_iter().collect::<Vec<_>>().join(", ")
                ))
                .with_hint("pin versions that fit together, or carry the repository that has the version needed"));
            }
            match found {
                Some(None) => {}
                Some(Some(c)) => {
                    let candidate = self.universe.package(c);
                    let closure = self.closures.get(p.repo).copied().unwrap_or_default();
                    if closure == Closure::Default && self.universe.base.contains(&candidate.name) {
                        self.external.insert(External {
                            relation: relation::show(group),
                            required_by: me.clone(),
                            reason: "base system".into(),
                        });
                    } else {
                        self.select(c, Some(me.clone()))?;
                    }
                }
                None => {
                    self.external.insert(External {
                        relation: relation::show(group),
                        required_by: me.clone(),
                        reason: "not in the carried repositories".into(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Resolves `wanted` and (per repository's `closures`) their dependencies. `arches` are
/// the architectures asked for (the first is the default for `Architecture: all`
/// dependants).
pub fn resolve(
    universe: &Universe,
    wanted: &[Wanted],
    closures: &[Closure],
    arches: &[String],
) -> Result<Resolution> {
    let mut r = Resolver {
        universe,
        closures,
        default_arch: arches,
        chosen: BTreeMap::new(),
        because: HashMap::new(),
        external: BTreeSet::new(),
        queue: VecDeque::new(),
    };
    for w in wanted {
        for i in pick(universe, w, arches)? {
            r.select(i, None)?;
        }
    }
    while let Some(i) = r.queue.pop_front() {
        r.follow(i)?;
    }
    Ok(Resolution {
        selected: r.chosen.values().copied().collect(),
        external: r.external.into_iter().collect(),
    })
}

/// The packages the manifest names: the exact version asked for, else the highest, for the
/// architecture asked for, else for each architecture read (an `Architecture: all`
/// package once), from its repository.
fn pick(universe: &Universe, w: &Wanted, arches: &[String]) -> Result<Vec<usize>> {
    let all: Vec<usize> = universe
        .by_name
        .get(&w.name)
        .into_iter()
        .flatten()
        .copied()
        .filter(|&i| universe.package(i).repo == w.repo)
        .collect();
    if all.is_empty() {
        let near = universe.nearest(&w.name);
        return Err(Error::Usage(format!(
            "package `{}` is not in the repository{}",
            w.name,
            if near.is_empty() {
                String::new()
            } else {
                format!("; nearest names: {}", near.join(", "))
            }
        )));
    }
    let version: Option<Version> = match &w.version {
        Some(v) => Some(v.parse().map_err(|e| {
            Error::Usage(format!(
                "package `{}`: version `{v}` is not a Debian version: {e:?}",
                w.name
            ))
        })?),
        None => None,
    };
    // One package per architecture asked for (`all` once): the highest version of each.
    let targets: Vec<&str> = match &w.arch {
        Some(a) => vec![a.as_str()],
        None => arches.iter().map(String::as_str).collect(),
    };
    let best = |target: &str| {
        all.iter()
            .copied()
            .filter(|&i| {
                let p = universe.package(i);
                p.arch == target || (p.arch == "all" && w.arch.is_none())
            })
            .filter(|&i| {
                version
                    .as_ref()
                    .is_none_or(|v| universe.package(i).version == *v)
            })
            .max_by(|a, b| {
                universe
                    .package(*a)
                    .version
                    .cmp(&universe.package(*b).version)
            })
    };
    let mut picked: Vec<usize> = targets.iter().filter_map(|t| best(t)).collect();
    picked.sort_unstable();
    picked.dedup();
    if !picked.is_empty() {
        return Ok(picked);
    }
    None::<Vec<usize>>.ok_or_else(|| {
        let have: BTreeSet<String> = all
            .iter()
            .map(|&i| {
                let p = universe.package(i);
                format!("{} ({})", p.version, p.arch)
            })
            .collect();
        Error::Usage(format!(
            "package `{}`{}{} is not in the repository, which has {}",
            w.name,
            w.version
                .as_deref()
                .map(|v| format!(" {v}"))
                .unwrap_or_default(),
            w.arch
                .as_deref()
                .map(|a| format!(" for {a}"))
                .unwrap_or_default(),
            have.into_iter().collect::<Vec<_>>().join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apt::packages::parse;

    const SHA: &str = "3e0b7e8e1c4c4f2f0f5d3a5b6a2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c";

    fn pkg(name: &str, version: &str, arch: &str, extra: &str) -> String {
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: {arch}\n{extra}Filename: pool/{name}_{version}.deb\nSize: 1\nSHA256: {SHA}\n\n"
        )
    }

    fn universe(text: &str) -> Universe {
        Universe::new(parse(text, 0, "t").unwrap())
    }

    fn names(u: &Universe, r: &Resolution) -> Vec<String> {
        r.selected
            .iter()
            .map(|&i| format!("{} {}", u.package(i).name, u.package(i).version))
            .collect()
    }

    fn want(name: &str) -> Wanted {
        Wanted {
            name: name.into(),
            version: None,
            arch: None,
            repo: 0,
        }
    }

    #[test]
    fn follows_dependencies_alternatives_provides_and_leaves_required_and_missing_out() {
        let text = [
            pkg(
                "jq",
                "1.6-2.1",
                "amd64",
                "Depends: libjq1 (= 1.6-2.1), libc6 (>= 2.34), awk | gawk\n",
            ),
            pkg(
                "libjq1",
                "1.6-2.1",
                "amd64",
                "Depends: libonig5 (>= 6.1), libc6\n",
            ),
            pkg("libjq1", "1.7", "amd64", ""),
            pkg(
                "libonig5",
                "6.9.8",
                "amd64",
                "Pre-Depends: multiarch-support\n",
            ),
            pkg("multiarch-support", "2.28", "amd64", "Priority: required\n"),
            pkg("mawk", "1.3.4", "amd64", "Provides: awk\n"),
            pkg("tzdata", "2024a", "all", ""),
            // libc6 is `optional`, but the essential dpkg needs it: base system.
            pkg(
                "dpkg",
                "1.21",
                "amd64",
                "Essential: yes\nPriority: required\nPre-Depends: libc6\n",
            ),
            pkg("libc6", "2.36", "amd64", "Priority: optional\n"),
        ]
        .concat();
        let u = universe(&text);
        let arches = vec!["amd64".to_string()];
        let r = resolve(&u, &[want("jq")], &[Closure::Default], &arches).unwrap();
        assert_eq!(
            names(&u, &r),
            [
                "jq 1.6-2.1",
                "libjq1 1.6-2.1",
                "libonig5 6.9.8",
                "mawk 1.3.4"
            ]
        );
        let ext: Vec<(&str, &str)> = r
            .external
            .iter()
            .map(|e| (e.relation.as_str(), e.reason.as_str()))
            .collect();
        assert!(ext.contains(&("libc6 (>= 2.34)", "base system")));
        assert!(ext.contains(&("multiarch-support", "base system")));
        let full = resolve(&u, &[want("jq")], &[Closure::Full], &arches).unwrap();
        assert!(names(&u, &full).contains(&"multiarch-support 2.28".to_string()));
        assert!(names(&u, &full).contains(&"libc6 2.36".to_string()));
        let none = resolve(&u, &[want("jq")], &[Closure::None], &arches).unwrap();
        assert_eq!(names(&u, &none), ["jq 1.6-2.1"]);
        // The highest version, unless one is asked for; `all` packages fit any arch.
        let r = resolve(
            &u,
            &[want("libjq1"), want("tzdata")],
            &[Closure::None],
            &arches,
        )
        .unwrap();
        assert_eq!(names(&u, &r), ["libjq1 1.7", "tzdata 2024a"]);
    }

    #[test]
    fn conflicts_and_unknown_names_are_usage_errors() {
        let text = [
            pkg("a", "1", "amd64", "Depends: c (= 1)\n"),
            pkg("b", "1", "amd64", "Depends: c (= 2)\n"),
            pkg("c", "1", "amd64", ""),
            pkg("c", "2", "amd64", ""),
        ]
        .concat();
        let u = universe(&text);
        let arches = vec!["amd64".to_string()];
        let e = match resolve(&u, &[want("a"), want("b")], &[Closure::Default], &arches) {
            Err(e) => e,
            Ok(_) => panic!("a conflict resolved"),
        };
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("two versions of c") && msg.contains("a 1"),
            "{msg}"
        );
        let e = match resolve(&u, &[want("cc")], &[Closure::Default], &arches) {
            Err(e) => e,
            Ok(_) => panic!("an unknown package resolved"),
        };
        assert!(e.to_string().contains("nearest names: c"), "{e}");
    }

    #[test]
    fn architectures_alternatives_and_versions_the_carried_repositories_lack() {
        let text = [
            pkg("jq", "1.6", "amd64", "Depends: libjq1\n"),
            pkg("jq", "1.6", "arm64", "Depends: libjq1\n"),
            pkg("libjq1", "1.6", "amd64", ""),
            pkg("libjq1", "1.6", "arm64", ""),
            pkg("tool", "1", "amd64", "Depends: hello | jq\n"),
            pkg("hello", "2.10", "amd64", ""),
            pkg("new", "1", "amd64", "Depends: libjq1 (>= 9)\n"),
        ]
        .concat();
        let u = universe(&text);
        let both = vec!["amd64".to_string(), "arm64".to_string()];
        // Each architecture asked for gets the package and its dependencies.
        let r = resolve(&u, &[want("jq")], &[Closure::Default], &both).unwrap();
        let got: Vec<String> = r
            .selected
            .iter()
            .map(|&i| format!("{} {}", u.package(i).name, u.package(i).arch))
            .collect();
        assert_eq!(
            got,
            ["jq amd64", "jq arm64", "libjq1 amd64", "libjq1 arm64"]
        );
        // An alternative already chosen wins over the first one.
        let amd = vec!["amd64".to_string()];
        let r = resolve(&u, &[want("jq"), want("tool")], &[Closure::Default], &amd).unwrap();
        assert!(
            !names(&u, &r).iter().any(|n| n.starts_with("hello")),
            "{:?}",
            names(&u, &r)
        );
        // A version the carried repositories do not have is a conflict, not external.
        let e = match resolve(&u, &[want("new")], &[Closure::Default], &amd) {
            Err(e) => e,
            Ok(_) => panic!("an unsatisfiable version resolved"),
        };
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("libjq1 (>= 9)"), "{e}");
        assert!(e.to_string().contains("only in 1.6"), "{e}");
    }
}
