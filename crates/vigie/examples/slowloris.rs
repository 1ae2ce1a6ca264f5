//! A slow-connection flood against one listener, with real requests beside
//! it (bench/slowloris.sh). Loopback only; bounded in count and time.
//!
//!   slowloris <addr> <slow connections> <seconds> [<url for real requests>]
//!
//! Opens `slow connections` on `addr` at once, each sending part of a
//! request head and nothing more, and holds each until the server closes it
//! (with `RECONNECT=1`, opens a new one each time: a flood that never
//! ends); meanwhile, when a URL is given, sends a real request every 20 ms
//! on a fresh connection (5 s timeout). Prints what it saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: slowloris <addr> <slow connections> <seconds> [<url>]";
    let addr: SocketAddr = args.first().and_then(|a| a.parse().ok()).ok_or(usage)?;
    let slow: usize = args.get(1).and_then(|a| a.parse().ok()).ok_or(usage)?;
    let seconds: u64 = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .filter(|s| *s <= 600)
        .ok_or(usage)?;
    let url = args.get(3).cloned();
    if !addr.ip().is_loopback() {
        return Err("only loopback addresses are flooded".into());
    }
    let until = Instant::now() + Duration::from_secs(seconds);
    let reconnect = std::env::var_os("RECONNECT").is_some();
    let (opened, held) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut holders = Vec::new();
    for _ in 0..slow {
        let (opened, held, peak) = (Arc::clone(&opened), Arc::clone(&held), Arc::clone(&peak));
        holders.push(tokio::spawn(async move {
            while Instant::now() < until {
                let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                if stream
                    .write_all(b"GET /api/info HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .is_err()
                {
                    continue;
                }
                let now = held.fetch_add(1, Ordering::Relaxed) + 1;
                peak.fetch_max(now, Ordering::Relaxed);
                let mut buf = [0u8; 64];
                let left = until.saturating_duration_since(Instant::now());
                // Held until the server closes it or the run ends.
                let _ = tokio::time::timeout(left, stream.read(&mut buf)).await;
                held.fetch_sub(1, Ordering::Relaxed);
                if !reconnect {
                    break;
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0usize;
    if let Some(url) = url {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| e.to_string())?;
        while Instant::now() < until {
            let started = Instant::now();
            match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => latencies.push(started.elapsed()),
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for holder in holders {
        let _ = holder.await;
    }
    let total = latencies.len() + failed;
    latencies.sort();
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map_or("-".to_owned(), |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0));
    println!(
        "slow connections: {slow} at once{}, {} opened in all, up to {} open at once; \
         real requests: {}/{total} succeeded, p50 {}, p99 {}, max {}",
        if reconnect {
            ", each reopened when closed"
        } else {
            ", each held until closed"
        },
        opened.load(Ordering::Relaxed),
        peak.load(Ordering::Relaxed),
        latencies.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(latencies.last()),
    );
    Ok(())
}
