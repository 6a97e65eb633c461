//! dg-netproxy: the tests' fault proxy as a program, to put a network
//! delay on loopback links (where `tc netem` is not available).
//!
//!     dg-netproxy --delay-us 500 --listen 127.0.0.1:7001 --to 127.0.0.1:5433 \
//!                                --listen 127.0.0.1:7002 --to 127.0.0.1:5434
//!
//! Each `--listen`/`--to` pair is one link; `--delay-us D` delays every
//! chunk by D microseconds in each direction (a round trip gains 2·D).
//! `--stats FILE` keeps FILE at "requests N" (simple queries and syncs
//! over all links so far), rewritten every 100 ms. It prints one
//! "listening <addr> -> <addr>" line per link once all listen, then runs
//! until killed.

use dg_tests::proxy::{Mode, Proxy};
use std::time::Duration;

const USAGE: &str =
    "usage: dg-netproxy [--delay-us D] [--stats FILE] --listen HOST:PORT --to HOST:PORT [--listen … --to …]…";

#[derive(Debug, PartialEq)]
struct Args {
    delay_us: u64,
    stats: Option<String>,
    links: Vec<(String, String)>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut delay_us = 0;
    let mut stats = None;
    let mut links = Vec::new();
    let mut listen: Option<String> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--delay-us" => {
                let v = value()?;
                delay_us = v
                    .parse()
                    .map_err(|_| format!("--delay-us: not a number of microseconds: {v}"))?;
            }
            "--stats" => stats = Some(value()?),
            "--listen" => {
                if let Some(l) = listen.replace(value()?) {
                    return Err(format!("--listen {l} has no --to"));
                }
            }
            "--to" => {
                let to = value()?;
                let l = listen
                    .take()
                    .ok_or(format!("--to {to} has no --listen before it"))?;
                links.push((l, to));
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if let Some(l) = listen {
        return Err(format!("--listen {l} has no --to"));
    }
    if links.is_empty() {
        return Err(USAGE.into());
    }
    Ok(Args {
        delay_us,
        stats,
        links,
    })
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = parse(&argv).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let mut proxies = Vec::new();
    for (listen, to) in &args.links {
        let proxy = Proxy::listen(listen.as_str(), to.as_str()).unwrap_or_else(|e| {
            eprintln!("dg-netproxy: {listen} -> {to}: {e}");
            std::process::exit(1)
        });
        proxy.stop_tracing();
        if args.delay_us > 0 {
            proxy.set(Mode::Delay(Duration::from_micros(args.delay_us)));
        }
        proxies.push((proxy, to));
    }
    for (proxy, to) in &proxies {
        println!("listening {} -> {to}", proxy.addr);
    }
    let Some(stats) = args.stats else {
        loop {
            std::thread::park();
        }
    };
    // Written to a temporary name and renamed, so a reader never sees a
    // half-written file.
    let tmp = format!("{stats}.tmp");
    loop {
        let requests: u64 = proxies.iter().map(|(p, _)| p.requests()).sum();
        if std::fs::write(&tmp, format!("requests {requests}\n"))
            .and_then(|()| std::fs::rename(&tmp, &stats))
            .is_err()
        {
            eprintln!("dg-netproxy: cannot write {stats}");
            std::process::exit(1)
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn links_pair_listen_with_the_next_to() {
        let a = parse(&argv(
            "--listen a:1 --to b:2 --delay-us 500 --listen c:3 --to d:4",
        ))
        .unwrap();
        assert_eq!(a.delay_us, 500);
        assert_eq!(
            a.links,
            vec![("a:1".into(), "b:2".into()), ("c:3".into(), "d:4".into())]
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            "",
            "--delay-us 5",
            "--listen a:1",
            "--to b:2",
            "--listen a:1 --listen c:3 --to d:4",
            "--delay-us x --listen a:1 --to b:2",
            "--delay-us",
            "--bogus",
        ] {
            assert!(parse(&argv(bad)).is_err(), "accepted: {bad:?}");
        }
    }
}
