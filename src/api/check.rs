//! `dg.check_node(node)`: will this node work? One row per check, run as
//! the caller's mapped role on a fresh connection of its own (not the
//! cache's, so `connect` measures a real connect and the PREPARE probe
//! shares no session with a DT). The privilege checks are `fdw::lookup`'s,
//! as for `dg.dist_exec`. The verdicts are pure functions of what the peer
//! answered (`verdicts`), so they are tested without a server.

use super::guards::{node_name, ok};
use crate::fdw;
use crate::remote::connection::Connection;
use crate::remote::wait::{cleanup_deadline, WaitEvent};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CStr;
use std::time::Instant;

/// One row of the result.
#[derive(Debug, PartialEq)]
pub struct Check {
    pub check: &'static str,
    /// NULL when the check could not run (no connection).
    pub ok: Option<bool>,
    pub detail: String,
    pub hint: Option<String>,
}

/// The checks after `connect`, in their order, for the rows of an
/// unreachable node.
const AFTER_CONNECT: &[&str] = &[
    "round_trip",
    "version",
    "hot_standby",
    "max_prepared_transactions",
    "prepared_in_use",
    "prepare",
    "lock_visibility",
    "finish_others",
    "password_rule",
];

/// What one query tells about the peer and the mapped role.
const FACTS_SQL: &str = "SELECT pg_catalog.current_setting('server_version_num')::int, \
     pg_catalog.current_setting('server_version'), pg_catalog.pg_is_in_recovery(), \
     pg_catalog.current_setting('max_prepared_transactions')::int, \
     (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_xacts)::int, \
     r.rolsuper, pg_catalog.pg_has_role(r.oid, 'pg_read_all_stats', 'USAGE') \
     FROM pg_catalog.pg_roles r WHERE r.rolname = pg_catalog.current_user()";

/// The oldest peer version dg supports.
const OLDEST_PEER: i32 = 140000;

pub struct Facts {
    pub version_num: i32,
    pub version: String,
    pub in_recovery: bool,
    pub max_prepared: i32,
    pub prepared: i32,
    pub superuser: bool,
    pub reads_all_stats: bool,
}

/// Which password rule `fdw` applied (never the password itself).
pub enum PasswordRule {
    Required { used: bool },
    WaivedForSuperuser,
    WaivedByMapping,
}

fn ms(d: std::time::Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

pub mod verdicts {
    use super::*;

    pub fn unreachable(message: &str) -> Vec<Check> {
        let mut rows = vec![Check {
            check: "connect",
            ok: Some(false),
            detail: message.trim_end().to_string(),
            hint: Some("Check the server's host, port and dbname options and that the node accepts connections.".into()),
        }];
        rows.extend(AFTER_CONNECT.iter().map(|c| Check {
            check: c,
            ok: None,
            detail: "not checked: no connection".into(),
            hint: None,
        }));
        rows
    }

    pub fn from_facts(f: &Facts) -> Vec<Check> {
        let max = f.max_prepared;
        vec![
            Check {
                check: "version",
                ok: Some(f.version_num >= OLDEST_PEER),
                detail: f.version.clone(),
                hint: (f.version_num < OLDEST_PEER)
                    .then(|| "dg supports peers of PostgreSQL 14 and later.".into()),
            },
            Check {
                check: "hot_standby",
                ok: Some(!f.in_recovery),
                detail: if f.in_recovery { "in recovery (a hot standby)" } else { "primary" }.into(),
                hint: f.in_recovery.then(|| {
                    "dg writes and prepares on its nodes: point the server at the primary.".into()
                }),
            },
            Check {
                check: "max_prepared_transactions",
                ok: Some(max > 0),
                detail: max.to_string(),
                hint: (max == 0).then(|| {
                    "Set max_prepared_transactions > 0 on the node and restart it.".into()
                }),
            },
            Check {
                check: "prepared_in_use",
                ok: Some(max == 0 || f.prepared < max),
                detail: format!("{} of {max}", f.prepared),
                hint: (max > 0 && f.prepared >= max).then(|| {
                    "Every slot is taken: finish or roll back old prepared transactions (pg_prepared_xacts), or raise max_prepared_transactions.".into()
                }),
            },
        ]
    }

    pub fn roles(f: &Facts) -> Vec<Check> {
        let sees = f.superuser || f.reads_all_stats;
        vec![
            Check {
                check: "lock_visibility",
                ok: Some(sees),
                detail: if f.superuser {
                    "superuser"
                } else if f.reads_all_stats {
                    "member of pg_read_all_stats"
                } else {
                    "cannot see other roles' sessions"
                }
                .into(),
                hint: (!sees).then(|| {
                    "The deadlock detector cannot see waits of other roles' sessions: GRANT pg_read_all_stats to the mapped role.".into()
                }),
            },
            Check {
                check: "finish_others",
                ok: Some(f.superuser),
                detail: if f.superuser {
                    "superuser".into()
                } else {
                    "only transactions this role prepared".into()
                },
                hint: (!f.superuser).then(|| {
                    "COMMIT PREPARED by another role needs a superuser: the resolver finishes each transaction with the mapping that prepared it, so give every mapping's role its own credentials.".into()
                }),
            },
        ]
    }

    pub fn password(rule: &PasswordRule) -> Check {
        let (detail, ok) = match rule {
            PasswordRule::Required { used: true } => ("required (non-superuser), and used", true),
            PasswordRule::Required { used: false } => {
                ("required (non-superuser), but not used", false)
            }
            PasswordRule::WaivedForSuperuser => {
                ("not required: the local role is a superuser", true)
            }
            PasswordRule::WaivedByMapping => (
                "not required: password_required = false on the user mapping",
                true,
            ),
        };
        Check {
            check: "password_rule",
            ok: Some(ok),
            detail: detail.into(),
            hint: None,
        }
    }
}

fn run(node: &str) -> Vec<Check> {
    let target = ok(fdw::lookup(node));
    let started = Instant::now();
    let mut conn = match Connection::open(&target) {
        Ok(c) => c,
        Err(e) => {
            let message = e.detail().unwrap_or_else(|| e.message());
            return verdicts::unreachable(&message);
        }
    };
    let mut rows = vec![Check {
        check: "connect",
        ok: Some(true),
        detail: ms(started.elapsed()),
        hint: None,
    }];
    // The resolver's bound on a statement outside any DT.
    let deadline = cleanup_deadline;
    let started = Instant::now();
    let rtt = conn.exec("SELECT 1", None, deadline(), WaitEvent::Result);
    rows.push(Check {
        check: "round_trip",
        ok: Some(rtt.is_ok()),
        detail: match &rtt {
            Ok(_) => ms(started.elapsed()),
            Err(e) => e.message(),
        },
        hint: None,
    });
    let facts = conn
        .exec(FACTS_SQL, None, deadline(), WaitEvent::Result)
        .map(|o| o.tuples.expect("a SELECT returns tuples"));
    let facts = match facts {
        Ok(t) => {
            let text = |c| t.text(0, c).unwrap_or_default();
            Facts {
                version_num: text(0).parse().unwrap_or(0),
                version: text(1),
                in_recovery: text(2) == "t",
                max_prepared: text(3).parse().unwrap_or(0),
                prepared: text(4).parse().unwrap_or(0),
                superuser: text(5) == "t",
                reads_all_stats: text(6) == "t",
            }
        }
        Err(e) => {
            rows.push(Check {
                check: "version",
                ok: Some(false),
                detail: e.message(),
                hint: None,
            });
            return rows;
        }
    };
    rows.extend(verdicts::from_facts(&facts));
    rows.push(prepare_probe(&mut conn, deadline()));
    rows.extend(verdicts::roles(&facts));
    // SAFETY: plain catalog lookup of the current user.
    let superuser = unsafe { pg_sys::superuser() };
    let rule = if target.password_required {
        PasswordRule::Required {
            used: conn.used_password,
        }
    } else if superuser {
        PasswordRule::WaivedForSuperuser
    } else {
        PasswordRule::WaivedByMapping
    };
    rows.push(verdicts::password(&rule));
    rows
}

/// A real PREPARE TRANSACTION and ROLLBACK PREPARED. The GID starts with
/// `dgcheck_`, which no dg GID does (`gid::Gid` starts `dg_`), and names
/// this backend and the time, so no one else's can be the same.
fn prepare_probe(conn: &mut Connection, deadline: Option<Instant>) -> Check {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // SAFETY: reads the backend's pid.
    let gid = format!("dgcheck_{}_{stamp}", unsafe { pg_sys::MyProcPid });
    let started = Instant::now();
    let result = conn
        .exec(
            &format!("BEGIN; PREPARE TRANSACTION '{gid}'"),
            None,
            deadline,
            WaitEvent::Prepare,
        )
        .and_then(|_| {
            let sql = format!("ROLLBACK PREPARED '{gid}'");
            conn.exec(&sql, None, deadline, WaitEvent::Cleanup)
        });
    match result {
        Ok(_) => Check {
            check: "prepare",
            ok: Some(true),
            detail: ms(started.elapsed()),
            hint: None,
        },
        Err(e) => Check {
            check: "prepare",
            ok: Some(false),
            detail: e.message(),
            hint: Some("dg needs PREPARE TRANSACTION on every node it writes to.".into()),
        },
    }
}

// pgrx reads the row type from the signature, so it must be written inline.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn check_node(
    node: Option<&CStr>,
) -> TableIterator<
    'static,
    (
        name!(check, String),
        name!(ok, Option<bool>),
        name!(detail, String),
        name!(hint, Option<String>),
    ),
> {
    let node = node_name(node);
    TableIterator::new(
        run(&node)
            .into_iter()
            .map(|c| (c.check.to_string(), c.ok, c.detail, c.hint)),
    )
}

#[cfg(test)]
mod unit {
    use super::verdicts::*;
    use super::*;

    fn facts() -> Facts {
        Facts {
            version_num: 150004,
            version: "15.4".into(),
            in_recovery: false,
            max_prepared: 10,
            prepared: 3,
            superuser: false,
            reads_all_stats: true,
        }
    }

    fn verdict(rows: &[Check], check: &str) -> Option<bool> {
        rows.iter().find(|c| c.check == check).and_then(|c| c.ok)
    }

    #[test]
    fn peers_older_than_14_fail() {
        assert_eq!(verdict(&from_facts(&facts()), "version"), Some(true));
        let old = Facts {
            version_num: 130011,
            ..facts()
        };
        assert_eq!(verdict(&from_facts(&old), "version"), Some(false));
    }

    #[test]
    fn every_slot_taken_fails() {
        let rows = from_facts(&facts());
        assert_eq!(verdict(&rows, "prepared_in_use"), Some(true));
        let full = Facts {
            prepared: 10,
            ..facts()
        };
        let rows = from_facts(&full);
        assert_eq!(verdict(&rows, "prepared_in_use"), Some(false));
        assert_eq!(rows[3].detail, "10 of 10");
    }

    #[test]
    fn unreachable_checks_every_row_but_connect_as_unknown() {
        let rows = unreachable("refused\n");
        assert_eq!(rows.len(), 1 + AFTER_CONNECT.len());
        assert_eq!(rows[0].ok, Some(false));
        assert_eq!(rows[0].detail, "refused");
        assert!(rows[1..].iter().all(|c| c.ok.is_none()));
    }

    #[test]
    fn a_password_rule_not_kept_fails() {
        assert_eq!(
            password(&PasswordRule::Required { used: false }).ok,
            Some(false)
        );
        assert_eq!(
            password(&PasswordRule::Required { used: true }).ok,
            Some(true)
        );
    }
}
