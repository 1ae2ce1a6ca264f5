//! `lab-service healthcheck http://host:port/path`: one HTTP/1.0 GET over a
//! plain TCP connection, exit 0 on a 2xx status line within 3 seconds.

use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub async fn run(url: &str) -> ExitCode {
    let Some(rest) = url.strip_prefix("http://") else {
        eprintln!("healthcheck: {url:?} is not an http:// URL");
        return ExitCode::from(2);
    };
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
            .await?;
        let mut head = [0u8; 64];
        let n = stream.read(&mut head).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&head[..n]).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(head)) if head.split(' ').nth(1).is_some_and(|s| s.starts_with('2')) => ExitCode::SUCCESS,
        Ok(Ok(head)) => {
            eprintln!("healthcheck: {url} answered {:?}", head.lines().next().unwrap_or(""));
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("healthcheck: {url}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("healthcheck: {url}: no answer within 3 s");
            ExitCode::FAILURE
        }
    }
}
