//! Nodes are foreign servers: of dg's own wrapper, or of postgres_fdw so
//! existing setups work unchanged. This module validates their options and
//! turns a node name into a `remote::target::Target`: the connection
//! options, the user mapping that supplies credentials, and the password
//! rule to enforce; and it says which mapping a background worker uses.

use crate::catalog;
use crate::error::{DgError, DgResult};
use crate::remote::libpq;
use crate::remote::target::Target;
use crate::session_name::SessionName;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::{PgList, PgLogLevel};
use std::ffi::{CStr, CString};
use std::sync::OnceLock;

/// Options that are libpq keywords but that dg sets itself or that would
/// change what a connection is (a replication connection runs no SQL).
const RESERVED: &[&str] = &[
    "client_encoding",
    "fallback_application_name",
    "replication",
];

/// libpq keywords that belong to the user mapping: who connects, and the
/// secrets that prove it.
const MAPPING_KEYWORDS: &[&str] = &["user", "password", "sslpassword", "sslcert", "sslkey"];

/// dg's own user-mapping option: a superuser may let a non-superuser
/// connect without a password (postgres_fdw's rule and name).
const PASSWORD_REQUIRED: &str = "password_required";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    Server,
    Mapping,
}

fn place_of(keyword: &str) -> Place {
    if MAPPING_KEYWORDS.contains(&keyword) {
        Place::Mapping
    } else {
        Place::Server
    }
}

/// (server, mapping) keywords; libpq's list does not change at run time.
static KEYWORDS: OnceLock<(Vec<String>, Vec<String>)> = OnceLock::new();

/// The keywords valid in `place`, from the libpq dg is linked with.
fn valid_keywords(place: Place) -> &'static [String] {
    let (server, mapping) =
        KEYWORDS.get_or_init(|| (keywords_of(Place::Server), keywords_of(Place::Mapping)));
    match place {
        Place::Server => server,
        Place::Mapping => mapping,
    }
}

fn keywords_of(place: Place) -> Vec<String> {
    let mut words: Vec<String> = libpq::conn_options()
        .into_iter()
        .filter(|o| !o.debug && !RESERVED.contains(&o.keyword.as_str()))
        .filter(|o| match place {
            Place::Server => !o.secret && place_of(&o.keyword) == Place::Server,
            Place::Mapping => o.secret || place_of(&o.keyword) == Place::Mapping,
        })
        .map(|o| o.keyword)
        .collect();
    if place == Place::Mapping {
        words.push(PASSWORD_REQUIRED.into());
    }
    words.sort();
    words.dedup();
    words
}

fn split_option(opt: &str) -> (&str, &str) {
    opt.split_once('=').unwrap_or((opt, ""))
}

/// The validator of the `dg` wrapper: libpq keywords only, server-side and
/// mapping-side ones kept apart, the wrapper itself taking none.
#[pg_extern(sql = false)]
fn dg_fdw_validator(options: Option<Vec<Option<String>>>, catalog: Option<Oid>) {
    let place = match catalog {
        Some(c) if c == pg_sys::ForeignServerRelationId => Some(Place::Server),
        Some(c) if c == pg_sys::UserMappingRelationId => Some(Place::Mapping),
        _ => None,
    };
    let valid = place.map(valid_keywords).unwrap_or_default();
    for opt in options.unwrap_or_default().into_iter().flatten() {
        let (key, value) = split_option(&opt);
        if !valid.iter().any(|v| v == key) {
            let is_other_place = place.is_some()
                && valid_keywords(if place == Some(Place::Server) {
                    Place::Mapping
                } else {
                    Place::Server
                })
                .iter()
                .any(|v| v == key);
            let hint = match (place, is_other_place) {
                (Some(Place::Server), true) => "Set it on the user mapping instead.".to_string(),
                (Some(Place::Mapping), true) => "Set it on the server instead.".to_string(),
                (None, _) => "The dg foreign-data wrapper takes no options.".to_string(),
                _ => format!("Valid options in this context are: {}.", valid.join(", ")),
            };
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_FDW_INVALID_OPTION_NAME,
                format!("invalid option \"{key}\""),
                "dg_fdw_validator",
            )
            .set_hint(hint)
            .report(PgLogLevel::ERROR);
        }
        if key == PASSWORD_REQUIRED {
            let Some(required) = parse_bool(value) else {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("{PASSWORD_REQUIRED} requires a Boolean value")
                );
            };
            // SAFETY: plain catalog lookup of the current user.
            if !required && !unsafe { pg_sys::superuser() } {
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    "password_required=false is superuser-only",
                    "dg_fdw_validator",
                )
                .set_hint("Ask a superuser to create or change this user mapping.")
                .report(PgLogLevel::ERROR);
            }
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" | "t" => Some(true),
        "false" | "off" | "no" | "0" | "f" => Some(false),
        _ => None,
    }
}

/// dg's own libpq options, after the node's and the mapping's: values come
/// back in the database's encoding, and the session is named for the
/// deadlock detector (so the name overrides a server's
/// `application_name` option).
fn add_session_options(options: &mut Vec<(String, String)>) {
    options.retain(|(k, _)| k != "application_name");
    // SAFETY: returns a static string of the database encoding.
    let encoding = unsafe { CStr::from_ptr(pg_sys::GetDatabaseEncodingName()) };
    options.push((
        "client_encoding".into(),
        encoding.to_string_lossy().into_owned(),
    ));
    let name = SessionName {
        coordinator: catalog::coordinator_id(),
        // SAFETY: reads the backend's pid.
        pid: unsafe { pg_sys::MyProcPid },
    };
    options.push(("application_name".into(), name.to_string()));
}

unsafe fn def_elems(list: *mut pg_sys::List) -> Vec<(String, String)> {
    // SAFETY: `list` is a List of DefElem from the catalogs.
    let list = unsafe { PgList::<pg_sys::DefElem>::from_pg(list) };
    list.iter_ptr()
        .map(|d| unsafe {
            let name = CStr::from_ptr((*d).defname).to_string_lossy().into_owned();
            let value = CStr::from_ptr(pg_sys::defGetString(d))
                .to_string_lossy()
                .into_owned();
            (name, value)
        })
        .collect()
}

fn has_usage(server: Oid) -> bool {
    // SAFETY: catalog privilege check for the current user.
    unsafe {
        #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
        let r =
            pg_sys::pg_foreign_server_aclcheck(server, pg_sys::GetUserId(), pg_sys::ACL_USAGE as _);
        #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
        let r = pg_sys::object_aclcheck(
            pg_sys::ForeignServerRelationId,
            server,
            pg_sys::GetUserId(),
            pg_sys::ACL_USAGE as _,
        );
        r == pg_sys::AclResult::ACLCHECK_OK
    }
}

fn syscache_hash(cache: pg_sys::SysCacheIdentifier::Type, oid: Oid) -> u32 {
    // SAFETY: computing a hash value does not touch the cache contents.
    unsafe {
        pg_sys::GetSysCacheHashValue(
            cache as _,
            pg_sys::Datum::from(oid),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        )
    }
}

/// A server usable as a node: of dg's or postgres_fdw's wrapper.
fn node_server(
    server: *mut pg_sys::ForeignServer,
    node: &str,
) -> DgResult<*mut pg_sys::ForeignServer> {
    // SAFETY: `server` is a valid palloc'd ForeignServer; the wrapper of an
    // existing server exists.
    let wrapper = unsafe {
        let fdw = pg_sys::GetForeignDataWrapper((*server).fdwid);
        CStr::from_ptr((*fdw).fdwname)
            .to_string_lossy()
            .into_owned()
    };
    if wrapper != "dg" && wrapper != "postgres_fdw" {
        return Err(DgError::NotANode {
            node: node.into(),
            wrapper,
        });
    }
    Ok(server)
}

/// The user mapping `user` would use on `server`: its own, else PUBLIC's.
fn mapping_oid(user: Oid, server: Oid) -> Option<Oid> {
    [user, pg_sys::InvalidOid].into_iter().find_map(|u| {
        // SAFETY: syscache lookup by (user, server); InvalidOid if none.
        let oid = unsafe {
            pg_sys::GetSysCacheOid(
                pg_sys::SysCacheIdentifier::USERMAPPINGUSERSERVER as _,
                pg_sys::Anum_pg_user_mapping_oid as _,
                pg_sys::Datum::from(u),
                pg_sys::Datum::from(server),
                pg_sys::Datum::from(0),
                pg_sys::Datum::from(0),
            )
        };
        (oid != pg_sys::InvalidOid).then_some(oid)
    })
}

/// Resolves `node` for the current role: the server must exist and be of
/// dg's or postgres_fdw's wrapper, the role needs USAGE on it and a user
/// mapping (its own or PUBLIC's), and a non-superuser needs a password.
pub fn lookup(node: &str) -> DgResult<Target> {
    let cname = CString::new(node).map_err(|_| DgError::UnknownNode(node.replace('\0', "")))?;
    // SAFETY: catalog lookup with a valid name; missing_ok returns NULL.
    let server = unsafe { pg_sys::GetForeignServerByName(cname.as_ptr(), true) };
    if server.is_null() {
        return Err(DgError::UnknownNode(node.into()));
    }
    let server = node_server(server, node)?;
    // SAFETY: valid ForeignServer.
    let server_id = unsafe { (*server).serverid };
    if !has_usage(server_id) {
        return Err(DgError::NoUsage(node.into()));
    }
    // SAFETY: reads the current user.
    let user = unsafe { pg_sys::GetUserId() };
    if mapping_oid(user, server_id).is_none() {
        return Err(DgError::NoMapping(node.into()));
    }
    // SAFETY: a mapping exists, so this does not raise.
    let um = unsafe { pg_sys::GetUserMapping(user, server_id) };
    // SAFETY: plain catalog lookup of the current user.
    build_target(node, server, um, !unsafe { pg_sys::superuser() })
}

/// The target of user mapping `mapping`, whoever it belongs to: for the
/// resolver, which finishes a prepared transaction with the credentials
/// that prepared it. Callers are superusers; no USAGE or password rule.
pub fn lookup_mapping(mapping: Oid) -> DgResult<Target> {
    // SAFETY: syscache lookup of the mapping row, released after copying
    // the two oids out of it.
    let (user, server_id) = unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::USERMAPPINGOID as _,
            pg_sys::Datum::from(mapping),
        );
        if tuple.is_null() {
            return Err(DgError::MappingGone(mapping.to_u32()));
        }
        let form = pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_user_mapping;
        let ids = ((*form).umuser, (*form).umserver);
        pg_sys::ReleaseSysCache(tuple);
        ids
    };
    // SAFETY: the server of an existing mapping exists; GetUserMapping
    // finds `user`'s mapping (PUBLIC's when user is InvalidOid).
    unsafe {
        let server = pg_sys::GetForeignServer(server_id);
        let node = CStr::from_ptr((*server).servername)
            .to_string_lossy()
            .into_owned();
        let server = node_server(server, &node)?;
        build_target(
            &node,
            server,
            pg_sys::GetUserMapping(user, server_id),
            false,
        )
    }
}

/// Connection options of `server` and `um`; `non_superuser` applies the
/// password rule unless the mapping waives it.
fn build_target(
    node: &str,
    server: *mut pg_sys::ForeignServer,
    um: *mut pg_sys::UserMapping,
    non_superuser: bool,
) -> DgResult<Target> {
    // SAFETY: valid catalog structs from the callers.
    let (server_id, server_opts, mapping, mapping_opts) = unsafe {
        (
            (*server).serverid,
            def_elems((*server).options),
            (*um).umid,
            def_elems((*um).options),
        )
    };
    // postgres_fdw servers carry options of their own (fetch_size, …):
    // only libpq keywords go to libpq.
    let server_words = valid_keywords(Place::Server);
    let mapping_words = valid_keywords(Place::Mapping);
    let mut options: Vec<(String, String)> = server_opts
        .into_iter()
        .filter(|(k, _)| server_words.contains(k))
        .collect();
    let mut password_required = true;
    let mut has_password = false;
    for (k, v) in mapping_opts {
        if k == PASSWORD_REQUIRED {
            password_required = parse_bool(&v).unwrap_or(true);
        } else if mapping_words.contains(&k) {
            has_password |= k == "password";
            options.push((k, v));
        }
    }
    let password_required = password_required && non_superuser;
    if password_required && !has_password {
        return Err(DgError::PasswordRequired(node.into()));
    }
    add_session_options(&mut options);
    Ok(Target {
        node: node.into(),
        server: server_id,
        mapping,
        server_hash: syscache_hash(pg_sys::SysCacheIdentifier::FOREIGNSERVEROID, server_id),
        mapping_hash: syscache_hash(pg_sys::SysCacheIdentifier::USERMAPPINGOID, mapping),
        password_required,
        options,
    })
}

/// How a background worker (resolver, detector) reaches `node`: with the
/// current role's mapping, else any mapping of the node, as workers run as
/// a superuser that may have none.
pub fn worker_target(node: &str) -> DgResult<Target> {
    match lookup(node) {
        Err(DgError::NoMapping(_)) => match catalog::any_mapping(node) {
            Some(mapping) => lookup_mapping(mapping),
            None => Err(DgError::NoMapping(node.into())),
        },
        target => target,
    }
}
