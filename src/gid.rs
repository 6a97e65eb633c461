//! Global transaction identifiers for `PREPARE TRANSACTION`.
//!
//! `dg_<coordinator-uuid>_<database-oid>_<full-xid>_<user-mapping-oid>`:
//! the prefix up to the database says which coordinator and database own
//! the transaction (so several coordinators and databases can share peers),
//! the xid says which local transaction decides it, and the user mapping
//! says which credentials can finish it. Pure logic, no server needed.

use std::fmt;

const TAG: &str = "dg";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gid {
    pub coordinator: String,
    pub database: u32,
    pub xid: u64,
    pub mapping: u32,
}

impl Gid {
    /// The prefix shared by every GID of one coordinator database; the
    /// resolver matches prepared transactions on it.
    pub fn prefix(coordinator: &str, database: u32) -> String {
        format!("{TAG}_{coordinator}_{database}_")
    }

    pub fn parse(s: &str) -> Option<Gid> {
        let mut parts = s.split('_');
        if parts.next()? != TAG {
            return None;
        }
        let coordinator = parts.next()?;
        let valid_uuid = coordinator.len() == 36
            && coordinator
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-');
        if !valid_uuid {
            return None;
        }
        let gid = Gid {
            coordinator: coordinator.to_owned(),
            database: parts.next()?.parse().ok()?,
            xid: parts.next()?.parse().ok()?,
            mapping: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(gid)
    }
}

impl fmt::Display for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}_{}",
            Gid::prefix(&self.coordinator, self.database),
            self.xid,
            self.mapping
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Gid {
        Gid {
            coordinator: "0b6f3c1e-9a4d-4f2a-8c1e-5d2b7a9e0f13".into(),
            database: 16384,
            xid: u64::MAX,
            mapping: u32::MAX,
        }
    }

    #[test]
    fn round_trips() {
        let g = sample();
        assert_eq!(Gid::parse(&g.to_string()), Some(g));
    }

    #[test]
    fn fits_postgres_limit() {
        // PostgreSQL's GIDSIZE is 200 including the terminator.
        assert!(sample().to_string().len() < 200);
    }

    #[test]
    fn prefix_matches_its_gids_only() {
        let g = sample();
        let s = g.to_string();
        assert!(s.starts_with(&Gid::prefix(&g.coordinator, 16384)));
        assert!(!s.starts_with(&Gid::prefix(&g.coordinator, 1638)));
    }

    #[test]
    fn rejects_foreign_and_malformed() {
        let s = sample().to_string();
        for bad in [
            "citus_1_2_3_4".to_string(),
            s.replacen("dg_", "dh_", 1),
            format!("{s}_9"),
            s.replace("16384", "x"),
            "dg_short_1_2_3".into(),
            String::new(),
        ] {
            assert_eq!(Gid::parse(&bad), None, "{bad}");
        }
    }
}
