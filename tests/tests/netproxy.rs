//! The fault proxy's delay is a one-way latency (what `dg-netproxy
//! --delay-us` and the bench's DG_BENCH_RTT_US rely on): a pipeline of
//! messages sent together pays the delay once each way, not once per
//! message. Checked against a plain TCP echo server, no PostgreSQL.

use dg_tests::proxy::{Mode, Proxy};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const DELAY: Duration = Duration::from_millis(100);
const MESSAGES: usize = 8;

/// An echo server on a free loopback port.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A frontend startup packet (the proxy parses the client's side as the
/// PostgreSQL protocol) and then `MESSAGES` simple queries, each written
/// on its own as a pipelining client does; returns how long until all of
/// it came back.
fn pipeline_round_trip(port: u16) -> Duration {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_nodelay(true).unwrap();
    let startup = [0u8, 0, 0, 8, 0, 3, 0, 0];
    let query = |i: usize| {
        let sql = format!("SELECT {i}\0");
        let mut m = vec![b'Q'];
        m.extend_from_slice(&(sql.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(sql.as_bytes());
        m
    };
    let mut expected = startup.len();
    let start = Instant::now();
    conn.write_all(&startup).unwrap();
    for i in 0..MESSAGES {
        let m = query(i);
        expected += m.len();
        conn.write_all(&m).unwrap();
    }
    let mut got = vec![0u8; expected];
    conn.read_exact(&mut got).unwrap();
    start.elapsed()
}

#[test]
fn a_delayed_link_delays_a_pipeline_once_each_way() {
    let proxy = Proxy::start(echo_server());
    proxy.set(Mode::Delay(DELAY));
    let took = pipeline_round_trip(proxy.port);
    assert_eq!(
        proxy.requests(),
        MESSAGES as u64,
        "every simple query is a request"
    );
    assert!(
        took >= 2 * DELAY,
        "a round trip through the delay took only {took:?}"
    );
    // Held per message, the pipeline would take MESSAGES × DELAY one way.
    assert!(
        took < 4 * DELAY,
        "{MESSAGES} pipelined messages took {took:?}: the delay added up per message"
    );
}

/// Kills the child on drop, also when an assertion fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dg_netproxy_serves_several_delayed_links() {
    let (a, b) = (echo_server(), echo_server());
    let stats = std::env::temp_dir().join(format!("dg-netproxy-test-{}.stats", std::process::id()));
    let _ = std::fs::remove_file(&stats);
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_dg-netproxy"))
            .args(["--delay-us", &DELAY.as_micros().to_string()])
            .args(["--stats", stats.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--to", &format!("127.0.0.1:{a}")])
            .args(["--listen", "127.0.0.1:0", "--to", &format!("127.0.0.1:{b}")])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run dg-netproxy"),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    for upstream in [a, b] {
        let line = lines.next().expect("a listening line").unwrap();
        let (listen, to) = line
            .strip_prefix("listening ")
            .and_then(|l| l.split_once(" -> "))
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        assert_eq!(to, format!("127.0.0.1:{upstream}"));
        let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
        let took = pipeline_round_trip(port);
        assert!(
            took >= 2 * DELAY && took < 4 * DELAY,
            "link {line}: a pipeline round trip took {took:?}, not about {:?}",
            2 * DELAY
        );
    }
    // Each pipeline was MESSAGES simple queries; the file catches up
    // within its 100 ms period.
    let want = format!("requests {}\n", 2 * MESSAGES);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&stats).ok().as_deref() != Some(want.as_str()) {
        assert!(
            Instant::now() < deadline,
            "stats file says {:?}, not {want:?}",
            std::fs::read_to_string(&stats)
        );
        thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(&stats);
    let bad = Command::new(env!("CARGO_BIN_EXE_dg-netproxy"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("has no --to"));
}
