//! Upgrades without a dump: dg 0.1.0, installed from its release script
//! (sql/dg--0.1.0.sql, the sql/dg.sql of tag v0.1.0), and updated with
//! `ALTER EXTENSION dg UPDATE` has exactly the catalog of a fresh install
//! of the current version; a DT left in doubt under 0.1.0 is still
//! resolved right after the update.
//!
//! Needs a dg built with the `fault_injection` feature (`make test` does).

use dg_tests::{dist_exec_each, scalar, Cluster, Db};

/// Every object of the extension with what defines it: function
/// definitions, table columns, constraints and indexes, view definitions,
/// privileges and comments (column comments too).
const CATALOG: &str = "
SELECT pg_describe_object(d.classid, d.objid, 0) AS object,
       coalesce(CASE d.classid
           WHEN 'pg_proc'::regclass THEN
               (SELECT pg_get_functiondef(p.oid) || ' acl ' || coalesce(p.proacl::text, '')
                  FROM pg_proc p WHERE p.oid = d.objid)
           WHEN 'pg_class'::regclass THEN
               (SELECT c.relkind::text || ' acl ' || coalesce(c.relacl::text, '') || ' ' ||
                       coalesce(pg_get_viewdef(c.oid), '') ||
                       coalesce((SELECT string_agg(a.attname || ' ' ||
                                     format_type(a.atttypid, a.atttypmod) ||
                                     CASE WHEN a.attnotnull THEN ' not null' ELSE '' END ||
                                     coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '') ||
                                     coalesce(' -- ' || col_description(c.oid, a.attnum), ''),
                                     ', ' ORDER BY a.attnum)
                                   FROM pg_attribute a
                                   LEFT JOIN pg_attrdef ad
                                          ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                                  WHERE a.attrelid = c.oid AND a.attnum > 0
                                    AND NOT a.attisdropped), '') ||
                       coalesce((SELECT ' constraints ' ||
                                        string_agg(pg_get_constraintdef(k.oid), '; ' ORDER BY 1)
                                   FROM pg_constraint k WHERE k.conrelid = c.oid), '') ||
                       coalesce((SELECT ' indexes ' ||
                                        string_agg(pg_get_indexdef(i.indexrelid), '; ' ORDER BY 1)
                                   FROM pg_index i WHERE i.indrelid = c.oid), '')
                  FROM pg_class c WHERE c.oid = d.objid)
           WHEN 'pg_namespace'::regclass THEN
               (SELECT coalesce(n.nspacl::text, '') FROM pg_namespace n WHERE n.oid = d.objid)
       END, '') AS definition,
       coalesce(obj_description(d.objid, d.classid::regclass::text), '') AS comment
  FROM pg_depend d
 WHERE d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'dg')
   AND d.deptype = 'e'
 ORDER BY 1, 2";

fn catalog(db: &Db) -> Vec<(String, String, String)> {
    db.coord()
        .query(CATALOG, &[])
        .expect("read the extension's catalog")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn version(db: &Db) -> String {
    db.coord()
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'dg'",
            &[],
        )
        .unwrap()
        .get(0)
}

const BANK: &str = "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
                    INSERT INTO accounts VALUES (1, 1000);";
const DEBIT: &str = "UPDATE accounts SET balance = balance - 100 WHERE id = 1";

#[test]
fn update_from_0_1_0_equals_a_fresh_install_and_resolves_in_doubt_dts() {
    // The resolver is off so the in-doubt DT waits for the update.
    let cluster = Cluster::start_with(2, &["dg.resolver_enabled = off"]);
    let old = cluster.db_at("upgraded", Some("0.1.0"));
    let fresh = cluster.db("fresh");
    assert_eq!(version(&old), "0.1.0");
    let current: String = fresh
        .coord()
        .query_one(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'dg'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_ne!(current, "0.1.0", "the current version is a later release");
    old.on_peers(BANK);

    // Under 0.1.0: one DT commits, and one is left in doubt: its backend
    // dies after the local commit, before any COMMIT PREPARED.
    let mut c = old.coord();
    c.batch_execute("BEGIN").unwrap();
    dist_exec_each(&mut c, &["peer1", "peer2"], DEBIT);
    c.batch_execute("COMMIT").unwrap();
    c.batch_execute("SET dg.fault = 'after_local_commit=exit'; BEGIN")
        .unwrap();
    dist_exec_each(&mut c, &["peer1", "peer2"], DEBIT);
    assert!(
        c.batch_execute("COMMIT").is_err(),
        "the backend was to die at the fault point"
    );
    cluster.coordinator.wait_ready();
    assert_eq!(
        (old.prepared(1), old.prepared(2)),
        (1, 1),
        "the DT is in doubt"
    );

    let mut c = old.coord();
    c.batch_execute("ALTER EXTENSION dg UPDATE").unwrap();
    assert_eq!(version(&old), current);
    let (upgraded, installed) = (catalog(&old), catalog(&fresh));
    assert!(!installed.is_empty());
    for (u, i) in upgraded.iter().zip(&installed) {
        assert_eq!(u, i, "the updated catalog differs from a fresh install");
    }
    assert_eq!(upgraded.len(), installed.len(), "objects missing or extra");

    // The decision written under 0.1.0 still decides.
    let committed = scalar(
        &mut c,
        "SELECT count(*) FROM dg.recover() WHERE action = 'commit' AND result = 'committed'",
    );
    assert_eq!(committed, 2, "the in-doubt DT is committed on both peers");
    assert_eq!(old.prepared_all(), 0);
    assert_eq!((old.balance(1, 1), old.balance(2, 1)), (800, 800));
}
