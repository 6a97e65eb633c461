//! The `application_name` of dg's sessions on the nodes:
//! `dg:<coordinator-uuid>:<backend pid>`. Pure, like `gid`.
//!
//! The name is a label: for people reading `pg_stat_activity` on a peer,
//! and for *other* coordinators' deadlock detectors, which cannot see this
//! coordinator's shared memory. Anyone who can log in to a peer can set the
//! same name on a session of their own, so this coordinator never takes it
//! as proof that a session is one of its own DTs: its detector matches
//! (node, remote pid) against the registry instead (src/README.md,
//! "Deadlock detection").

use std::fmt;

const TAG: &str = "dg:";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionName {
    pub coordinator: String,
    pub pid: i32,
}

impl SessionName {
    /// The coordinator and backend a session's name claims, if it is a dg
    /// name at all.
    pub fn parse(name: &str) -> Option<SessionName> {
        let rest = name.strip_prefix(TAG)?;
        let (coordinator, pid) = rest.rsplit_once(':')?;
        Some(SessionName {
            coordinator: coordinator.to_owned(),
            pid: pid.parse().ok()?,
        })
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TAG}{}:{}", self.coordinator, self.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        let n = SessionName {
            coordinator: "6f1c2a8e-0000-4000-8000-000000000001".into(),
            pid: 4242,
        };
        assert_eq!(
            n.to_string(),
            "dg:6f1c2a8e-0000-4000-8000-000000000001:4242"
        );
        assert_eq!(SessionName::parse(&n.to_string()), Some(n));
        assert_eq!(SessionName::parse("dg"), None);
        assert_eq!(SessionName::parse("psql"), None);
        assert_eq!(SessionName::parse("dg:x:notapid"), None);
    }

    #[test]
    fn fits_namedatalen() {
        // application_name is truncated at NAMEDATALEN - 1 = 63 bytes.
        let n = SessionName {
            coordinator: "6f1c2a8e-0000-4000-8000-000000000001".into(),
            pid: i32::MAX,
        };
        assert!(n.to_string().len() <= 63);
    }
}
