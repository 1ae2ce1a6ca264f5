//! The router built and run inside the test's own process ([`build`] then
//! [`Router::run_until_stopped`]): proxying to the active color, a switch
//! through the admin API, and a stop that ends the run.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use vigie_router::{build, Config};
use vigie_telemetry::Registry;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

/// An upstream answering every request with its own name (readiness too).
async fn upstream(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(move |_request| async move {
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(name.as_bytes()))))
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    addr
}

/// Status, `x-vigie-color` and body of one request.
async fn call(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
) -> (u16, Option<String>, String) {
    let response = client.request(request).await.expect("an answer");
    let status = response.status().as_u16();
    let color = response
        .headers()
        .get("x-vigie-color")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, color, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn proxies_switches_and_stops_in_process() {
    let blue = upstream("blue").await;
    let green = upstream("green").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state.json");
    let targets = dir.path().join("targets.json");
    let cli = Cli::try_parse_from([
        "router",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--blue",
        &format!("http://{blue}"),
        "--green",
        &format!("http://{green}"),
        "--state-file",
        state.to_str().expect("utf-8"),
        "--targets-file",
        targets.to_str().expect("utf-8"),
        "--health-check-interval",
        "20ms",
    ])
    .expect("valid flags");
    let router = build(cli.config, Registry::default()).await.expect("built");
    let public = router.public_addr().expect("public address");
    let admin = router.admin_addr().expect("admin address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(router.run_until_stopped(async {
        let _ = stopped.await;
    }));

    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let get = || {
        http::Request::get(format!("http://{public}/anything"))
            .body(Full::default())
            .expect("request")
    };
    assert_eq!(call(&client, get()).await, (200, Some("blue".into()), "blue".into()));
    assert!(std::fs::read_to_string(&targets)
        .expect("targets file")
        .contains(&blue.to_string()));

    let switch = http::Request::post(format!("http://{admin}/switch"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"to":"green"}"#)))
        .expect("request");
    let (status, _, body) = call(&client, switch).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""result":"ok""#), "{body}");
    assert_eq!(call(&client, get()).await, (200, Some("green".into()), "green".into()));
    assert!(std::fs::read_to_string(&state).expect("state file").contains("green"));

    let _ = stop.send(());
    let ended = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the run ends after the stop")
        .expect("join");
    assert!(ended.is_ok(), "{ended:?}");
}
