//! The backend's routes without the telemetry layers (no metrics middleware,
//! no traces, no request log, no request ids), with everything else the
//! service has (JSON 404/405, body limit, panic recovery, graceful shutdown): the baseline of
//! bench/backend.sh.
//!
//! `cargo run --release -p vigie-backend --example bare -- 127.0.0.1:3001 /tmp/bare.db`

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use vigie_backend::db::Database;
use vigie_backend::fault::Faults;
use vigie_backend::{harden, routes, AppState};
use vigie_telemetry::{Color, Registry};

/// The same allocator as the `vigie` binary, so the comparison is of the layers alone.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3001".into());
    let db_path = args.next().unwrap_or_else(|| "bare.db".into());
    let mut registry = Registry::default();
    let db = Database::open(
        std::path::Path::new(&db_path),
        &mut registry,
        vigie_telemetry::traces::Traces::disabled(),
    )?;
    let state = AppState {
        color: Color::Blue,
        db,
        draining: Arc::new(AtomicBool::new(false)),
    };
    let app = harden(routes(state, Arc::new(registry), Faults::default()));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("bare backend listening on {}", listener.local_addr()?);
    // Graceful shutdown as in `vigie backend`: it costs a little per request.
    axum::serve(listener, app)
        .with_graceful_shutdown(vigie_telemetry::shutdown::signal())
        .await?;
    Ok(())
}
