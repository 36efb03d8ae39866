//! A set of allowed syscalls, with argument conditions, that can be merged
//! with another (the launcher's filter is the union of all the others).

use std::collections::{BTreeMap, BTreeSet};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// How a syscall is allowed.
#[derive(Clone, Debug)]
enum Allow {
    /// Whatever its arguments.
    Always,
    /// When one of these rules (each a conjunction of conditions) holds.
    When(Vec<SeccompRule>),
}

/// The syscalls a thread kind may make.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    syscalls: BTreeMap<i64, Allow>,
    /// Syscalls that fail with EACCES instead of trapping (unless allowed).
    refused: BTreeSet<i64>,
}

/// A condition on argument `arg`: its low 32 bits equal `value`.
pub fn arg_eq(arg: u8, value: u64) -> SeccompCondition {
    cond(arg, SeccompCmpOp::Eq, value)
}

/// A condition on argument `arg`: `arg & mask == value` (low 32 bits).
pub fn arg_masked(arg: u8, mask: u64, value: u64) -> SeccompCondition {
    cond(arg, SeccompCmpOp::MaskedEq(mask), value)
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    // Only an argument index above 5 is refused, and every caller passes a
    // constant below 6.
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .expect("seccomp argument index below 6")
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    // Refused only when empty; every caller passes at least one condition.
    SeccompRule::new(conditions).expect("a seccomp rule has a condition")
}

impl Rules {
    /// Allows each of `syscalls` whatever its arguments.
    pub fn allow(&mut self, syscalls: &[libc::c_long]) -> &mut Self {
        for &nr in syscalls {
            self.syscalls.insert(nr, Allow::Always);
        }
        self
    }

    /// Allows `syscall` when all `conditions` hold (added to the rules
    /// already there: any one rule allows).
    pub fn allow_if(
        &mut self,
        syscall: libc::c_long,
        conditions: Vec<SeccompCondition>,
    ) -> &mut Self {
        let new = rule(conditions);
        match self
            .syscalls
            .entry(syscall)
            .or_insert(Allow::When(Vec::new()))
        {
            Allow::Always => {}
            Allow::When(rules) => rules.push(new),
        }
        self
    }

    /// Allows `ioctl` with each of `requests` (its second argument).
    pub fn allow_ioctls(&mut self, requests: &[u64]) -> &mut Self {
        for &request in requests {
            self.allow_if(libc::SYS_ioctl, vec![arg_eq(1, request)]);
        }
        self
    }

    /// Makes `syscalls` fail with EACCES rather than trap, when not
    /// allowed: for calls glibc makes on its own and copes without (the
    /// files malloc reads once per process, from whichever thread first
    /// needs them).
    pub fn refuse(&mut self, syscalls: &[libc::c_long]) -> &mut Self {
        self.refused.extend(syscalls.iter().copied());
        self
    }

    /// Adds everything `other` allows.
    pub fn merge(&mut self, other: &Rules) -> &mut Self {
        for (&nr, allow) in &other.syscalls {
            match allow {
                Allow::Always => {
                    self.syscalls.insert(nr, Allow::Always);
                }
                Allow::When(rules) => {
                    for r in rules {
                        match self.syscalls.entry(nr).or_insert(Allow::When(Vec::new())) {
                            Allow::Always => {}
                            Allow::When(mine) => mine.push(r.clone()),
                        }
                    }
                }
            }
        }
        self.refused.extend(other.refused.iter().copied());
        self
    }

    /// Whether `syscall` is allowed at all (for tests).
    pub fn mentions(&self, syscall: libc::c_long) -> bool {
        self.syscalls.contains_key(&syscall)
    }

    /// Whether `syscall` is allowed whatever its arguments (for tests).
    pub fn always(&self, syscall: libc::c_long) -> bool {
        matches!(self.syscalls.get(&syscall), Some(Allow::Always))
    }

    /// Compiles the filter: allowed calls pass, refused ones fail with
    /// EACCES, anything else traps (SIGSYS, see [`crate::trap`]). The
    /// refusal is a second program: of two filters' answers the kernel
    /// keeps the stronger (trap over errno over allow).
    pub fn compile(&self) -> Result<Vec<BpfProgram>, seccompiler::BackendError> {
        // A refused call passes the allow-list, so that the refusal
        // (errno) is the answer, not a trap.
        let rules = self
            .syscalls
            .iter()
            .map(|(&nr, allow)| {
                let rules = match allow {
                    Allow::Always => Vec::new(),
                    Allow::When(rules) => rules.clone(),
                };
                (nr, rules)
            })
            .chain(
                self.refused
                    .iter()
                    .filter(|nr| !self.syscalls.contains_key(nr))
                    .map(|&nr| (nr, Vec::new())),
            )
            .collect();
        let allow = SeccompFilter::new(
            rules,
            SeccompAction::Trap,
            SeccompAction::Allow,
            crate::ARCH,
        )?;
        let mut programs = Vec::with_capacity(2);
        let refused: BTreeMap<i64, Vec<SeccompRule>> = self
            .refused
            .iter()
            .filter(|nr| !self.syscalls.contains_key(nr))
            .map(|&nr| (nr, Vec::new()))
            .collect();
        if !refused.is_empty() {
            let refuse = SeccompFilter::new(
                refused,
                SeccompAction::Allow,
                SeccompAction::Errno(libc::EACCES as u32),
                crate::ARCH,
            )?;
            programs.push(refuse.try_into()?);
        }
        // Installed in this order: the allow-list last, since installing
        // a filter takes prctl and seccomp, which it does not allow.
        programs.push(allow.try_into()?);
        Ok(programs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_wins_over_conditions_in_a_merge() {
        let mut a = Rules::default();
        a.allow_ioctls(&[1, 2]);
        let mut b = Rules::default();
        b.allow(&[libc::SYS_ioctl, libc::SYS_read]);
        assert!(!a.always(libc::SYS_ioctl));
        a.merge(&b);
        assert!(a.always(libc::SYS_ioctl));
        assert!(a.always(libc::SYS_read));
        // And the other way round.
        let mut c = Rules::default();
        c.allow(&[libc::SYS_ioctl]).allow_ioctls(&[3]);
        assert!(c.always(libc::SYS_ioctl));
        assert!(!c.mentions(libc::SYS_write));
        assert!(c.compile().is_ok());
    }
}
