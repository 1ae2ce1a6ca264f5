//! The listeners' limits under abuse: slow and idle connections are closed
//! after the header read timeout on every listener, a flood of slow
//! connections (with the file descriptor limit lowered) does not starve
//! real requests, the admin port's flood leaves the public one alone, and
//! shutdown closes idle and half-sent connections at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{client, dead_url, Proc, TempDir, ADMIN_TOKEN};

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

fn router_args<'a>(blue: &'a str, green: &'a str, dir: &'a TempDir, extra: &[&'a str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "router",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--blue",
        blue,
        "--green",
        green,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.push("--state-file".into());
    args.push(dir.join("state.json").display().to_string());
    args.push("--targets-file".into());
    args.push(dir.join("targets/backend.json").display().to_string());
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_after_the_header_timeout_on_every_listener() {
    let dir = TempDir::new("limits-timeout");
    let backend = Proc::backend("blue", &dir.join("t.db"), &["--header-read-timeout", "1s"]);
    let green = dead_url();
    let args = router_args(&backend.url(""), &green, &dir, &["--header-read-timeout", "1s"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let router = Proc::start(&args, &[("VIGIE_ADMIN_TOKEN", ADMIN_TOKEN)], &["public", "admin"]);
    let listeners = [
        ("backend", backend.addr),
        ("router public", router.addr),
        ("router admin", router.admin_addr.expect("admin listener")),
    ];
    for (name, addr) in listeners {
        for (what, bytes) in [("one byte of a request", &b"G"[..]), ("nothing", &b""[..])] {
            let mut stream = slow_connection(addr, bytes).await.expect("connect");
            let closed = closed_within(&mut stream, Duration::from_secs(4)).await;
            let took =
                closed.unwrap_or_else(|| panic!("{name}: a connection that sent {what} was still open after 4 s"));
            assert!(
                took >= Duration::from_millis(800),
                "{name}: closed after {took:?}, before its timeout"
            );
        }
        // A kept-alive connection left idle after a request is closed too.
        let mut stream = slow_connection(addr, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("connect");
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.expect("an answer");
        assert_eq!(&head[..9], b"HTTP/1.1 ", "{name}");
        assert!(
            closed_within(&mut stream, Duration::from_secs(4)).await.is_some(),
            "{name}: an idle kept-alive connection was still open after 4 s"
        );
    }
}

/// Legitimate requests while a flood of slow connections goes on: how many
/// succeeded, and the slowest.
async fn requests_during_flood(flood_addr: SocketAddr, url: &str, flood: usize) -> (usize, usize, Duration) {
    let flooding = tokio::spawn(async move {
        let mut held = Vec::with_capacity(flood);
        for _ in 0..flood {
            if let Some(stream) = slow_connection(flood_addr, b"GET / HTTP/1.1\r\nHost: x\r\n").await {
                held.push(stream);
            }
        }
        // Hold them a while: the server must close them, not the client.
        tokio::time::sleep(Duration::from_secs(2)).await;
        held.len()
    });
    let http = client();
    let (mut ok, mut total, mut slowest) = (0, 0, Duration::ZERO);
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let started = Instant::now();
        total += 1;
        let fresh = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        if fresh.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            ok += 1;
        }
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(http);
    let opened = flooding.await.expect("flood task");
    assert!(
        opened >= flood / 2,
        "the flood opened only {opened} of {flood} connections"
    );
    (ok, total, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_slow_connections_does_not_starve_real_requests() {
    let dir = TempDir::new("limits-flood");
    let db = dir.join("t.db").display().to_string();
    // 256 descriptors in all: without a cap, 2,000 slow connections would
    // exhaust them and `accept` would fail for everyone.
    let backend = Proc::start_with_fd_limit(
        256,
        &[
            "backend",
            "--color",
            "blue",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db,
            "--max-connections",
            "128",
        ],
        &[],
        &["public"],
    );
    let (ok, total, slowest) = requests_during_flood(backend.addr, &backend.url("/api/info"), 2000).await;
    assert_eq!(
        ok, total,
        "{ok} of {total} requests succeeded during the flood; slowest {slowest:?}"
    );
    assert!(slowest < Duration::from_secs(2), "slowest request {slowest:?}");
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
    let green = dead_url();
    let args = router_args(&backend.url(""), &green, &dir, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let router = Proc::start_with_fd_limit(512, &args, &[("VIGIE_ADMIN_TOKEN", ADMIN_TOKEN)], &["public", "admin"]);
    let admin = router.admin_addr.expect("admin listener");
    let (ok, total, slowest) = requests_during_flood(admin, &router.url("/api/info"), 2000).await;
    assert_eq!(
        ok, total,
        "{ok} of {total} public requests succeeded during the admin flood; slowest {slowest:?}"
    );
    assert!(slowest < Duration::from_secs(2), "slowest request {slowest:?}");
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
async fn shutdown_closes_idle_and_half_sent_connections_at_once() {
    let dir = TempDir::new("limits-shutdown");
    let mut backend = Proc::backend("blue", &dir.join("t.db"), &[]);
    let green = dead_url();
    let args = router_args(&backend.url(""), &green, &dir, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut router = Proc::start(&args, &[("VIGIE_ADMIN_TOKEN", ADMIN_TOKEN)], &["public", "admin"]);
    // Drain timeouts are 10 s (backend) and 30 s (router): nothing is in
    // flight, so neither may wait for them.
    for (name, proc) in [("router", &mut router), ("backend", &mut backend)] {
        let _half = slow_connection(proc.addr, b"GET /api/in").await.expect("connect");
        let mut idle = slow_connection(proc.addr, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("connect");
        let mut head = [0u8; 12];
        idle.read_exact(&mut head).await.expect("an answer");
        let started = Instant::now();
        proc.terminate();
        let status = proc.wait_exit(Duration::from_secs(5));
        let took = started.elapsed();
        assert!(status.success(), "{name}: {status}");
        assert!(took < Duration::from_secs(3), "{name} took {took:?} to exit");
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
    let green = dead_url();
    let args = router_args(&backend.url(""), &green, &dir, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let router = Proc::start(&args, &[("VIGIE_ADMIN_TOKEN", ADMIN_TOKEN)], &["public", "admin"]);
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
