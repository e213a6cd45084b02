//! Dependency relations of Debian control data (`Depends`, `Pre-Depends`, `Provides`):
//! `a (>= 1.2) | b:any, c`. Versions compare with Debian's ordering (`debversion`).

use std::fmt;

use debversion::Version;

/// A version comparison in a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "<<" => Op::Lt,
            "<=" | "<" => Op::Le,
            "=" => Op::Eq,
            ">=" | ">" => Op::Ge,
            ">>" => Op::Gt,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }
}

/// One alternative: a package name, an optional architecture qualifier (`:any`,
/// `:native`, `:amd64`) and an optional version constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    pub qualifier: Option<String>,
    pub constraint: Option<(Op, Version)>,
}

impl Relation {
    /// Whether `version` meets the constraint (always, without one).
    pub fn allows(&self, version: &Version) -> bool {
        match &self.constraint {
            None => true,
            Some((op, wanted)) => {
                let ord = version.cmp(wanted);
                match op {
                    Op::Lt => ord.is_lt(),
                    Op::Le => ord.is_le(),
                    Op::Eq => ord.is_eq(),
                    Op::Ge => ord.is_ge(),
                    Op::Gt => ord.is_gt(),
                }
            }
        }
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(q) = &self.qualifier {
            write!(f, ":{q}")?;
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({} {v})", op.as_str())?;
        }
        Ok(())
    }
}

/// A group of alternatives (`a | b`): any one satisfies it.
pub type Alternatives = Vec<Relation>;

/// Shows a group as control data writes it.
pub fn show(group: &[Relation]) -> String {
    group
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Parses a relation field: comma-separated groups of `|`-separated alternatives.
/// Architecture restrictions (`[amd64]`) and build profiles (`<!nocheck>`) are dropped;
/// they do not appear in binary package indexes.
pub fn parse(field: &str) -> Result<Vec<Alternatives>, String> {
    let mut groups = Vec::new();
    for group in field.split(',') {
        let group = group.trim();
        if group.is_empty() {
            continue;
        }
        let alternatives = group
            .split('|')
            .map(parse_one)
            .collect::<Result<Vec<_>, _>>()?;
        groups.push(alternatives);
    }
    Ok(groups)
}

fn parse_one(text: &str) -> Result<Relation, String> {
    let text = text.trim();
    let bad = |why: &str| format!("`{text}`: {why}");
    let cut = text.find(['(', '[', '<', ' ']).unwrap_or(text.len());
    let (head, mut rest) = text.split_at(cut);
    let (name, qualifier) = match head.split_once(':') {
        Some((n, q)) => (n, Some(q.to_string())),
        None => (head, None),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
    {
        return Err(bad("not a package name"));
    }
    let mut constraint = None;
    rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('(') {
        let (inside, after) = inner
            .split_once(')')
            .ok_or_else(|| bad("unclosed version constraint"))?;
        let inside = inside.trim();
        let split = inside
            .find(|c: char| !"<>=".contains(c))
            .ok_or_else(|| bad("no version in the constraint"))?;
        let (op, version) = inside.split_at(split);
        let op = Op::parse(op.trim()).ok_or_else(|| bad("unknown version operator"))?;
        let version: Version = version
            .trim()
            .parse()
            .map_err(|e| bad(&format!("bad version: {e:?}")))?;
        constraint = Some((op, version));
        rest = after;
    }
    let _ = rest; // `[arch]` and `<profile>` restrictions: not in binary indexes.
    Ok(Relation {
        name: name.to_string(),
        qualifier,
        constraint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_groups_alternatives_qualifiers_and_constraints() {
        let groups =
            parse("libc6 (>= 2.34), libjq1 (= 1.6-2.1), awk | mawk:any (<< 2), python3:any")
                .unwrap();
        assert_eq!(groups.len(), 4);
        assert_eq!(show(&groups[0]), "libc6 (>= 2.34)");
        assert_eq!(show(&groups[2]), "awk | mawk:any (<< 2)");
        assert_eq!(groups[3][0].qualifier.as_deref(), Some("any"));
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert!(groups[0][0].allows(&v("2.36-9")));
        assert!(!groups[0][0].allows(&v("2.31-13")));
        assert!(groups[1][0].allows(&v("1.6-2.1")));
        assert!(!groups[1][0].allows(&v("1.6-2.1+b1")));
        assert!(v("1.0~rc1") < v("1.0"));
        assert!(parse("Bad Name").is_err());
        assert!(parse("a (>= 1").is_err());
        assert!(parse("a (~~ 1)").is_err());
    }
}
