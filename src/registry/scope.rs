//! Scope rules: what part of the file tree a pod may read or write, and
//! the overlap and cover relations the registry decides with.
//!
//! Paths are compared by component: `/src` covers `/src/a`, never `/srcx`.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::registry::RegistryError;

/// Read < Write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// May read.
    Read,
    /// May read and write.
    Write,
}

/// One rule: a target path, a permission, and whether it reaches below
/// the target's direct children.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScopeRule {
    /// Absolute, normalised (no `.` or `..`, no trailing `/`).
    pub target: PathBuf,
    /// Read or Write.
    pub permission: Permission,
    /// Recursive: the target and everything below. Otherwise the target
    /// and its direct children.
    pub recursive: bool,
}

impl ScopeRule {
    /// A rule; fails for a relative target or one with `..`.
    pub fn new(
        target: impl AsRef<Path>,
        permission: Permission,
        recursive: bool,
    ) -> Result<ScopeRule, RegistryError> {
        let target = target.as_ref();
        if !target.is_absolute() {
            return Err(RegistryError::InvalidScope {
                reason: format!("target {} is relative", target.display()),
            });
        }
        let mut normal = PathBuf::from("/");
        for c in target.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(part) => normal.push(part),
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(RegistryError::InvalidScope {
                        reason: format!("target {} contains `..`", target.display()),
                    });
                }
            }
        }
        Ok(ScopeRule {
            target: normal,
            permission,
            recursive,
        })
    }

    /// A recursive Write rule.
    pub fn write(target: impl AsRef<Path>) -> Result<ScopeRule, RegistryError> {
        ScopeRule::new(target, Permission::Write, true)
    }

    /// A recursive Read rule.
    pub fn read(target: impl AsRef<Path>) -> Result<ScopeRule, RegistryError> {
        ScopeRule::new(target, Permission::Read, true)
    }

    /// Checks a rule read back from an event or given by a caller.
    pub(crate) fn validate(&self) -> Result<(), RegistryError> {
        let again = ScopeRule::new(&self.target, self.permission, self.recursive)?;
        if again.target != self.target {
            return Err(RegistryError::InvalidScope {
                reason: format!("target {} is not normalised", self.target.display()),
            });
        }
        Ok(())
    }

    pub(crate) fn is_write(&self) -> bool {
        self.permission == Permission::Write
    }
}

impl std::fmt::Display for ScopeRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.permission {
            Permission::Read => "read",
            Permission::Write => "write",
        };
        let r = if self.recursive {
            ""
        } else {
            " (non-recursive)"
        };
        write!(f, "{p} {}{r}", self.target.display())
    }
}

/// `path` is `base` or lies below it, by component.
pub fn is_under(path: &Path, base: &Path) -> bool {
    path.starts_with(base)
}

/// `child` is a direct child of `parent`.
pub fn is_direct_child(child: &Path, parent: &Path) -> bool {
    child.parent() == Some(parent)
}

/// Whether two rules overlap (permission ignored).
pub fn overlaps(a: &ScopeRule, b: &ScopeRule) -> bool {
    match (a.recursive, b.recursive) {
        (true, true) => is_under(&a.target, &b.target) || is_under(&b.target, &a.target),
        (true, false) => recursive_meets_flat(a, b),
        (false, true) => recursive_meets_flat(b, a),
        (false, false) => {
            a.target == b.target
                || is_direct_child(&a.target, &b.target)
                || is_direct_child(&b.target, &a.target)
        }
    }
}

fn recursive_meets_flat(r: &ScopeRule, n: &ScopeRule) -> bool {
    is_under(&n.target, &r.target) || is_direct_child(&r.target, &n.target)
}

/// Whether `c` fully covers `i`: at least `i`'s permission, and either `c`
/// is recursive and `i`'s target lies under `c`'s, or both are
/// non-recursive with equal targets.
pub fn fully_covers(c: &ScopeRule, i: &ScopeRule) -> bool {
    c.permission >= i.permission
        && ((c.recursive && is_under(&i.target, &c.target))
            || (!c.recursive && !i.recursive && c.target == i.target))
}

/// Authority to delegate, given as a scope of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authority {
    /// What may be handed out.
    pub allow: Vec<ScopeRule>,
    /// What may not (a Read deny blocks everything, a Write deny writes).
    pub deny: Vec<ScopeRule>,
}

impl Authority {
    /// Whether this authority allows handing out `rule`. No allow rules
    /// means no authority.
    pub fn allows(&self, rule: &ScopeRule) -> bool {
        let granted = self.allow.iter().any(|a| {
            a.permission >= rule.permission
                && ((a.recursive && is_under(&rule.target, &a.target))
                    || (!a.recursive && !rule.recursive && a.target == rule.target))
        });
        let blocked = self.deny.iter().any(|d| {
            overlaps(d, rule)
                && (d.permission == Permission::Read || rule.permission == Permission::Write)
        });
        granted && !blocked
    }

    pub(crate) fn validate(&self) -> Result<(), RegistryError> {
        self.allow
            .iter()
            .chain(&self.deny)
            .try_for_each(ScopeRule::validate)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn w(t: &str) -> ScopeRule {
        ScopeRule::write(t).unwrap()
    }
    fn flat(t: &str) -> ScopeRule {
        ScopeRule::new(t, Permission::Write, false).unwrap()
    }

    #[test]
    fn overlap_rules_from_the_original_crate() {
        assert!(overlaps(&w("/src"), &w("/src/core")));
        assert!(overlaps(&w("/src/core"), &w("/src")));
        assert!(!overlaps(&w("/src"), &w("/docs")));
        assert!(
            !overlaps(&w("/src"), &w("/srcx")),
            "by component, not by prefix"
        );
        assert!(!overlaps(&flat("/src"), &w("/src/a/b")));
        assert!(overlaps(&flat("/src"), &flat("/src/child")));
        assert!(
            overlaps(&flat("/src"), &w("/src/a")),
            "a recursive rule at a direct child"
        );
        assert!(overlaps(&flat("/src/a/b"), &w("/src")));
        assert!(overlaps(&flat("/src"), &flat("/src")));
        assert!(!overlaps(&flat("/src"), &flat("/src/a/b")));
    }

    #[test]
    fn full_cover() {
        assert!(fully_covers(&w("/src"), &w("/src/core")));
        assert!(!fully_covers(&w("/src/core"), &w("/src")));
        assert!(fully_covers(&flat("/src"), &flat("/src")));
        assert!(!fully_covers(&flat("/src"), &w("/src")));
        assert!(
            !fully_covers(&ScopeRule::read("/src").unwrap(), &w("/src/a")),
            "permission must be at least"
        );
        assert!(fully_covers(
            &w("/src"),
            &ScopeRule::read("/src/a").unwrap()
        ));
    }

    #[test]
    fn targets_are_absolute_and_normalised() {
        assert!(ScopeRule::write("src").is_err());
        assert!(ScopeRule::write("/src/../etc").is_err());
        assert_eq!(
            ScopeRule::write("/src/./a/").unwrap().target,
            PathBuf::from("/src/a")
        );
    }

    #[test]
    fn authority() {
        let a = Authority {
            allow: vec![w("/src")],
            deny: vec![],
        };
        assert!(a.allows(&w("/src/core")));
        assert!(!a.allows(&w("/docs")));
        let read_only = Authority {
            allow: vec![ScopeRule::read("/src").unwrap()],
            deny: vec![],
        };
        assert!(!read_only.allows(&w("/src/a")));
        assert!(read_only.allows(&ScopeRule::read("/src/a").unwrap()));
        let denied = Authority {
            allow: vec![w("/src")],
            deny: vec![w("/src/secret")],
        };
        assert!(!denied.allows(&w("/src/secret/x")));
        assert!(
            denied.allows(&ScopeRule::read("/src/secret/x").unwrap()),
            "a write deny blocks writes only"
        );
        assert!(!Authority::default().allows(&ScopeRule::read("/src").unwrap()));
    }
}
