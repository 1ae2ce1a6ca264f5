//! The listeners' limits under abuse: slow and idle connections are closed
//! after the header read timeout on every listener, a stalled upload does
//! not hold its connection, a flood of slow connections (with the file
//! descriptor limit lowered) does not starve real requests nor evict a
//! kept-alive client, the cap never closes a connection it just accepted,
//! the admin port's flood leaves the public one alone, and shutdown closes
//! idle and half-sent connections at once.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{client, dead_url, Proc, TempDir, ADMIN_TOKEN};

/// Slow connections per flood: few enough for a test process under a 1024
/// descriptor limit, many times the caps below.
const FLOOD: usize = 400;

/// Opens a connection and sends `bytes` (a partial request, or nothing).
async fn slow_connection(addr: SocketAddr, bytes: &[u8]) -> Option<TcpStream> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    stream.write_all(bytes).await.ok()?;
    Some(stream)
}

/// Waits until the server closes `stream` (EOF or reset); how long it took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

/// Sends one complete request on `stream` and reads its whole response
/// (head and `Content-Length` body): the status.
async fn request_on(stream: &mut TcpStream, path: &str) -> Option<u16> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            let text = String::from_utf8_lossy(&response).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => response.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.ok()?
}

fn backend_args<'a>(db: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "backend",
        "--color",
        "blue",
        "--listen",
        "127.0.0.1:0",
        "--database",
        db,
    ];
    args.extend_from_slice(extra);
    args
}

/// A router in front of `backend` (green is absent), with `extra` flags.
fn router(backend: &Proc, dir: &Path, fd_limit: Option<u32>, extra: &[&str]) -> Proc {
    let args = Proc::router_args(&backend.url(""), &dead_url(), dir, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let token = [("VIGIE_ADMIN_TOKEN", ADMIN_TOKEN)];
    match fd_limit {
        Some(limit) => Proc::start_with_fd_limit(limit, &args, &token, &["public", "admin"]),
        None => Proc::start(&args, &token, &["public", "admin"]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_after_the_header_timeout_on_every_listener() {
    let dir = TempDir::new("limits-timeout");
    let backend = Proc::backend("blue", &dir.join("t.db"), &["--header-read-timeout", "1s"]);
    let router = router(&backend, dir.path(), None, &["--header-read-timeout", "1s"]);
    let listeners = [
        ("backend", backend.addr),
        ("router public", router.addr),
        ("router admin", router.admin_addr.expect("admin listener")),
    ];
    for (name, addr) in listeners {
        for (what, bytes) in [("one byte of a request", &b"G"[..]), ("nothing", &b""[..])] {
            let mut stream = slow_connection(addr, bytes).await.expect("connect");
            let took = closed_within(&mut stream, Duration::from_secs(8))
                .await
                .unwrap_or_else(|| panic!("{name}: a connection that sent {what} was still open after 8 s"));
            assert!(
                took >= Duration::from_millis(800),
                "{name}: closed after {took:?}, before its timeout"
            );
        }
        // A kept-alive connection left idle after a request is closed too.
        let mut stream = slow_connection(addr, b"").await.expect("connect");
        assert!(
            request_on(&mut stream, "/health/live").await.is_some(),
            "{name}: no answer"
        );
        assert!(
            closed_within(&mut stream, Duration::from_secs(8)).await.is_some(),
            "{name}: an idle kept-alive connection was still open after 8 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_does_not_hold_its_connection() {
    let dir = TempDir::new("limits-upload");
    let backend = Proc::backend("blue", &dir.join("t.db"), &["--header-read-timeout", "1s"]);
    let head =
        "POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ti";
    let mut stream = slow_connection(backend.addr, head.as_bytes()).await.expect("connect");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a stalled upload still held its connection after 8 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
}

/// Real requests (fresh connection each) while `flood` slow connections
/// are opened on `flood_addr` and held: (succeeded, sent, slowest, how many
/// slow connections the server closed).
async fn requests_during_flood(flood_addr: SocketAddr, url: String, flood: usize) -> (usize, usize, Duration, usize) {
    let mut held = Vec::with_capacity(flood);
    for _ in 0..flood {
        if let Some(stream) = slow_connection(flood_addr, b"GET / HTTP/1.1\r\nHost: x\r\n").await {
            held.push(stream);
        }
    }
    assert!(
        held.len() >= flood / 2,
        "the flood opened only {} of {flood} connections",
        held.len()
    );
    let requests = tokio::spawn(async move {
        let fresh = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let (mut ok, mut sent, mut slowest) = (0, 0, Duration::ZERO);
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            let started = Instant::now();
            sent += 1;
            if fresh.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                ok += 1;
            }
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (ok, sent, slowest)
    });
    let (ok, sent, slowest) = requests.await.expect("request task");
    let mut closed = 0;
    for stream in &mut held {
        if closed_within(stream, Duration::from_millis(1)).await.is_some() {
            closed += 1;
        }
    }
    (ok, sent, slowest, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_slow_connections_does_not_starve_real_requests() {
    let dir = TempDir::new("limits-flood");
    let db = dir.join("t.db").display().to_string();
    // 96 descriptors in all: without a cap the flood would exhaust them and
    // `accept` would fail for everyone. The header timeout is long, so it
    // is the cap's eviction that makes room, not the timeout.
    let args = backend_args(&db, &["--max-connections", "32", "--header-read-timeout", "60s"]);
    let backend = Proc::start_with_fd_limit(96, &args, &[], &["public"]);
    let (ok, sent, slowest, closed) = requests_during_flood(backend.addr, backend.url("/api/info"), FLOOD).await;
    assert_eq!(
        ok, sent,
        "{ok} of {sent} requests succeeded during the flood; slowest {slowest:?}"
    );
    assert!(slowest < Duration::from_secs(5), "slowest request {slowest:?}");
    assert!(
        closed > FLOOD / 2,
        "the server closed only {closed} of {FLOOD} slow connections"
    );
    assert!(
        !backend.raw_output().contains("accept failed"),
        "the backend ran out of descriptors:\n{}",
        backend.raw_output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_the_admin_port_leaves_the_public_listener_alone() {
    let dir = TempDir::new("limits-admin");
    let backend = Proc::backend("blue", &dir.join("t.db"), &[]);
    let router = router(
        &backend,
        dir.path(),
        Some(192),
        &["--admin-max-connections", "16", "--header-read-timeout", "60s"],
    );
    let admin = router.admin_addr.expect("admin listener");
    let (ok, sent, slowest, closed) = requests_during_flood(admin, router.url("/api/info"), FLOOD).await;
    assert_eq!(
        ok, sent,
        "{ok} of {sent} public requests succeeded during the admin flood; slowest {slowest:?}"
    );
    assert!(slowest < Duration::from_secs(5), "slowest request {slowest:?}");
    assert!(closed > FLOOD / 2, "the admin listener closed only {closed} of {FLOOD}");
    // The admin API itself still answers: the flood evicts itself.
    let live = client()
        .get(router.admin_url("/health/live"))
        .send()
        .await
        .expect("admin answers");
    assert!(live.status().is_success());
    assert!(
        !router.raw_output().contains("accept failed"),
        "{}",
        router.raw_output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_busy_or_kept_alive_client_keeps_its_connection_and_newcomers_are_served() {
    let dir = TempDir::new("limits-cap");
    let db = dir.join("t.db").display().to_string();
    let args = backend_args(
        &db,
        &[
            "--max-connections",
            "4",
            "--header-read-timeout",
            "60s",
            "--fault-latency-ms",
            "3000",
        ],
    );
    let backend = Proc::start(&args, &[], &["public"]);
    // A kept-alive client that has been served and waits between requests.
    let mut kept = slow_connection(backend.addr, b"").await.expect("connect");
    assert_eq!(request_on(&mut kept, "/health/live").await, Some(200));
    // A request in flight (the fault delays /api/* by 3 s).
    let slow = tokio::spawn({
        let url = backend.url("/api/info");
        async move { client().get(url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Newcomers, one after the other, at the cap: each is served.
    for i in 0..5 {
        let mut stream = slow_connection(backend.addr, b"").await.expect("connect");
        assert_eq!(request_on(&mut stream, "/health/live").await, Some(200), "newcomer {i}");
    }
    // A flood of slow connections evicts its own, not the served client.
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.extend(slow_connection(backend.addr, b"GET / HTTP/1.1\r\n").await);
    }
    assert_eq!(
        request_on(&mut kept, "/health/live").await,
        Some(200),
        "the kept-alive client was evicted"
    );
    assert_eq!(slow.await.expect("task").expect("the request in flight"), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_and_half_sent_connections_at_once() {
    let dir = TempDir::new("limits-shutdown");
    let db = dir.join("t.db").display().to_string();
    let args = backend_args(&db, &["--drain-timeout", "60s"]);
    let mut backend = Proc::start(&args, &[], &["public"]);
    let mut router = router(&backend, dir.path(), None, &["--drain-timeout", "60s"]);
    // Nothing is in flight: neither may wait for its 60 s drain timeout.
    for (name, proc) in [("router", &mut router), ("backend", &mut backend)] {
        let _half = slow_connection(proc.addr, b"GET /api/in").await.expect("connect");
        let mut idle = slow_connection(proc.addr, b"").await.expect("connect");
        assert!(
            request_on(&mut idle, "/health/live").await.is_some(),
            "{name}: no answer"
        );
        let started = Instant::now();
        proc.terminate();
        let status = proc.wait_exit(Duration::from_secs(30));
        let took = started.elapsed();
        assert!(status.success(), "{name}: {status}");
        assert!(took < Duration::from_secs(10), "{name} took {took:?} to exit");
        assert!(
            !proc.raw_output().contains("requests in flight"),
            "{name} waited for requests that were not in flight:\n{}",
            proc.raw_output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_may_send_as_many_header_fields_through_the_router_as_directly() {
    let dir = TempDir::new("limits-headers");
    let backend = Proc::backend("blue", &dir.join("t.db"), &[]);
    let router = router(&backend, dir.path(), None, &[]);
    let send = |url: String, fields: usize| async move {
        let mut request = client().get(url);
        // reqwest adds accept and host: 2 of the fields.
        for i in 0..fields - 2 {
            request = request.header(format!("x-field-{i}"), "1");
        }
        request.send().await.expect("an answer").status().as_u16()
    };
    for fields in [99, 100] {
        assert_eq!(
            send(backend.url("/api/info"), fields).await,
            200,
            "{fields} fields, directly"
        );
        assert_eq!(
            send(router.url("/api/info"), fields).await,
            200,
            "{fields} fields, through the router"
        );
    }
    assert_eq!(
        send(router.url("/api/info"), 101).await,
        431,
        "over the limit, at the router"
    );
}
