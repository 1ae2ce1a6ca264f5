//! The tasks table in SQLite. Both colors open the same file: WAL mode lets
//! one write while the other reads, and a busy timeout queues concurrent
//! writers instead of failing them.
//!
//! The WAL stays bounded only if SQLite's automatic checkpoint (every 1000
//! pages) can copy it back into the database: every statement must run to
//! its end. An `INSERT … RETURNING` left after its first row (as
//! `query_row` leaves it) kept every checkpoint from copying anything: 3,000
//! inserts grew the WAL to 25 MB with the database at 4 KiB. Statements with
//! `RETURNING` therefore go through [`returning_one`], which steps them to
//! completion (the same 3,000 inserts: WAL 4.1 MB, reused from then on).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use vigie_telemetry::traces::Traces;

/// The WAL's size on disk after a checkpoint (SQLite's automatic
/// checkpoint runs at 1000 pages, about 4 MiB).
const WAL_SIZE_LIMIT_BYTES: i64 = 8 * 1024 * 1024;

/// How long a writer waits for the other color's transaction to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Query latency buckets in seconds, 100 µs to 2.5 s.
const QUERY_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5,
];

/// Schema steps, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &["CREATE TABLE tasks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT NOT NULL,
        done INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )"];

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database {path}")]
    Open { path: String, source: rusqlite::Error },
    #[error("database migration failed")]
    Migrate(#[source] rusqlite::Error),
    #[error("{operation} query failed")]
    Query {
        operation: &'static str,
        source: rusqlite::Error,
    },
    #[error("database worker failed")]
    Worker(#[from] tokio::task::JoinError),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Task {
    pub id: i64,
    pub title: String,
    pub done: bool,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug)]
struct DbMetrics {
    duration: Family<OperationLabel, Histogram>,
    errors: Family<OperationLabel, Counter>,
}

#[derive(Clone, Debug)]
pub struct Database {
    conn: Arc<Mutex<Connection>>,
    metrics: DbMetrics,
    traces: Traces,
}

impl Database {
    /// Opens (creating if needed) and migrates the database.
    pub fn open(path: &Path, registry: &mut Registry, traces: Traces) -> Result<Self, DbError> {
        let open_err = |source| DbError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let journal_mode = set_wal_mode(&conn).map_err(open_err)?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            // Still correct (SQLite's locks serialize the two colors), only slower.
            tracing::warn!(database = %path.display(), journal_mode, "the database is not in WAL mode: the two colors' readers and writers will block each other");
        }
        // FULL: a committed task survives a power cut, not only a crash.
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        // After a burst of writes the WAL is cut back to this size once
        // checkpointed, instead of keeping its peak size on disk.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)
            .map_err(open_err)?;
        migrate(&mut conn).map_err(DbError::Migrate)?;

        let metrics = DbMetrics {
            duration: Family::new_with_constructor(|| Histogram::new(QUERY_BUCKETS)),
            errors: Family::default(),
        };
        registry.register_with_unit(
            "vigie_db_query_duration",
            "Database query duration by operation",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "vigie_db_errors",
            "Failed database queries by operation",
            metrics.errors.clone(),
        );
        registry.register_collector(Box::new(SizeCollector {
            database: path.to_path_buf(),
        }));
        Ok(Database {
            conn: Arc::new(Mutex::new(conn)),
            metrics,
            traces,
        })
    }

    /// A client span for the query when the current request is sampled.
    fn query_span(&self, operation: &'static str) -> Option<Context> {
        let tracer = self.traces.tracer()?;
        let parent = Context::current();
        if !parent.span().span_context().is_sampled() {
            return None;
        }
        let span = tracer
            .span_builder(format!("{operation} tasks"))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("db.system", "sqlite"),
                KeyValue::new("db.system.name", "sqlite"),
                KeyValue::new("db.operation.name", operation),
                KeyValue::new("db.collection.name", "tasks"),
            ])
            .start_with_context(tracer, &parent);
        Some(parent.with_span(span))
    }

    /// Runs `query` on a blocking thread, timed, counted and traced under `operation`.
    async fn call<T, F>(&self, operation: &'static str, query: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let span = self.query_span(operation);
        let start = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock poisons it; the connection itself is still usable.
            let guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            query(&guard)
        })
        .await?;
        let label = OperationLabel { operation };
        self.metrics
            .duration
            .get_or_create(&label)
            .observe(start.elapsed().as_secs_f64());
        if let Some(cx) = span {
            if let Err(e) = &result {
                cx.span().set_status(Status::error(e.to_string()));
            }
            cx.span().end();
        }
        result.map_err(|source| {
            self.metrics.errors.get_or_create(&label).inc();
            DbError::Query { operation, source }
        })
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        self.call("ping", |c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    pub async fn list(&self, limit: u32, offset: u32) -> Result<Vec<Task>, DbError> {
        self.call("select", move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, title, done, created_at, updated_at FROM tasks ORDER BY id LIMIT ?1 OFFSET ?2",
            )?;
            let rows = stmt.query_map(params![limit, offset], row_to_task)?;
            rows.collect()
        })
        .await
    }

    pub async fn get(&self, id: i64) -> Result<Option<Task>, DbError> {
        self.call("select", move |c| {
            c.query_row(
                "SELECT id, title, done, created_at, updated_at FROM tasks WHERE id = ?1",
                [id],
                row_to_task,
            )
            .optional()
        })
        .await
    }

    pub async fn create(&self, title: String) -> Result<Task, DbError> {
        self.call("insert", move |c| {
            returning_one(
                c,
                &format!(
                    "INSERT INTO tasks (title, done, created_at, updated_at) VALUES (?1, 0, {NOW}, {NOW})
                     RETURNING id, title, done, created_at, updated_at"
                ),
                [title],
            )?
            .ok_or(rusqlite::Error::QueryReturnedNoRows)
        })
        .await
    }

    pub async fn update(&self, id: i64, title: Option<String>, done: Option<bool>) -> Result<Option<Task>, DbError> {
        self.call("update", move |c| {
            returning_one(
                c,
                &format!(
                    "UPDATE tasks SET title = COALESCE(?2, title), done = COALESCE(?3, done), updated_at = {NOW}
                     WHERE id = ?1 RETURNING id, title, done, created_at, updated_at"
                ),
                params![id, title, done],
            )
        })
        .await
    }

    /// Returns whether a task was deleted.
    pub async fn delete(&self, id: i64) -> Result<bool, DbError> {
        self.call("delete", move |c| {
            Ok(c.execute("DELETE FROM tasks WHERE id = ?1", [id])? > 0)
        })
        .await
    }
}

/// Runs a write with `RETURNING` to its end and gives its first row: a
/// statement stopped after its first row pins the WAL (see the module doc).
fn returning_one(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<Option<Task>> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let first = rows.next()?.map(row_to_task).transpose()?;
    while rows.next()?.is_some() {}
    Ok(first)
}

/// `vigie_db_size_bytes{file}`: the database file and its WAL, read at each
/// scrape (a missing file is 0 bytes).
#[derive(Debug)]
struct SizeCollector {
    database: std::path::PathBuf,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabel {
    file: &'static str,
}

impl Collector for SizeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut wal = self.database.clone().into_os_string();
        wal.push("-wal");
        let files = [("database", self.database.clone()), ("wal", wal.into())];
        let mut family = encoder.encode_descriptor(
            "vigie_db_size",
            "Size of the SQLite database file and of its write-ahead log",
            Some(&Unit::Bytes),
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (file, path) in files {
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let gauge = ConstGauge::new(i64::try_from(bytes).unwrap_or(i64::MAX));
            gauge.encode(family.encode_family(&FileLabel { file })?)?;
        }
        Ok(())
    }
}

fn row_to_task(row: &rusqlite::Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: row.get(0)?,
        title: row.get(1)?,
        done: row.get(2)?,
        created_at: row.get(3)?,
        updated_at: row.get(4)?,
    })
}

/// Puts the database file in WAL mode (a setting of the file, kept across
/// opens). Moving a new file to WAL needs a lock that SQLite does not wait
/// for with the busy timeout when another connection (the other color,
/// started at the same moment) holds one: it answers "database is locked"
/// at once. So a busy answer is retried until [`BUSY_TIMEOUT`] has passed.
/// Returns the journal mode SQLite settled on (`wal`, unless the file
/// system cannot hold a WAL).
fn set_wal_mode(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0)) {
            Err(rusqlite::Error::SqliteFailure(failure, _))
                if failure.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// Applies pending migrations in one immediate transaction, so two colors
/// starting together do not both run them.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let applied: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for step in MIGRATIONS.iter().skip(applied) {
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len())?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write-only traffic from two connections (the two colors) keeps the
    /// WAL bounded: the automatic checkpoint copies it back and it is
    /// reused. Before `returning_one`, 3,000 inserts left a 25 MB WAL and
    /// a 4 KiB database.
    #[tokio::test]
    async fn the_wal_stays_bounded_under_write_only_traffic() {
        let dir = std::env::temp_dir().join(format!("vigie-db-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("t.db");
        let mut registry = Registry::default();
        let blue = Database::open(&path, &mut registry, Traces::disabled()).expect("open");
        let green = Database::open(&path, &mut Registry::default(), Traces::disabled()).expect("open");
        for i in 0..3000 {
            let db = if i % 2 == 0 { &blue } else { &green };
            let task = db.create(format!("task {i}")).await.expect("create");
            if i % 10 == 0 {
                db.update(task.id, None, Some(true)).await.expect("update");
            }
        }
        let size = |name: &str| std::fs::metadata(dir.join(name)).map(|m| m.len()).unwrap_or(0);
        let (database, wal) = (size("t.db"), size("t.db-wal"));
        // The automatic checkpoint runs at 1000 pages (4 MiB of 4 KiB pages).
        assert!(wal < 6 * 1024 * 1024, "WAL {wal} bytes, database {database} bytes");
        assert!(
            database > 64 * 1024,
            "nothing was checkpointed: database {database} bytes, WAL {wal}"
        );
        let text = vigie_telemetry::exposition::render(&registry, vigie_telemetry::exposition::Format::PrometheusText)
            .expect("render");
        assert!(
            text.contains(&format!("vigie_db_size_bytes{{file=\"database\"}} {database}")),
            "{text}"
        );
        assert!(text.contains("vigie_db_size_bytes{file=\"wal\"}"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Both colors start at once on one new database file (compose starts
    /// them together): every open succeeds, none fails on a locked file.
    #[test]
    fn colors_opening_one_new_file_at_once_all_succeed() {
        for round in 0..20 {
            let dir = std::env::temp_dir().join(format!("vigie-db-race-{}-{round}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            let path = dir.join("t.db");
            let barrier = std::sync::Barrier::new(4);
            std::thread::scope(|scope| {
                let opens: Vec<_> = (0..4)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            Database::open(&path, &mut Registry::default(), Traces::disabled())
                                .map(|_| ())
                                .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
                        })
                    })
                    .collect();
                for open in opens {
                    let result = open.join().expect("no panic");
                    assert!(result.is_ok(), "round {round}: {result:?}");
                }
            });
            let mode: String = Connection::open(&path)
                .and_then(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
                .expect("journal mode");
            assert_eq!(mode, "wal", "round {round}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[tokio::test]
    async fn crud_round_trip_and_metrics() {
        let dir = std::env::temp_dir().join(format!("vigie-db-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        let mut registry = Registry::default();
        let db = Database::open(&path, &mut registry, Traces::disabled()).expect("open");
        let task = db.create("write docs".into()).await.expect("create");
        assert_eq!(task.title, "write docs");
        assert!(!task.done);
        let updated = db
            .update(task.id, None, Some(true))
            .await
            .expect("update")
            .expect("exists");
        assert!(updated.done);
        assert_eq!(updated.title, "write docs");
        assert_eq!(db.list(10, 0).await.expect("list"), vec![updated.clone()]);
        assert!(db.delete(task.id).await.expect("delete"));
        assert!(db.get(task.id).await.expect("get").is_none());
        assert!(db
            .update(task.id, Some("x".into()), None)
            .await
            .expect("update")
            .is_none());
        // Opening again migrates nothing and keeps the data layout.
        let _again = Database::open(&path, &mut Registry::default(), Traces::disabled()).expect("reopen");
        let text = vigie_telemetry::exposition::render(&registry, vigie_telemetry::exposition::Format::PrometheusText)
            .expect("render");
        assert!(
            text.contains("vigie_db_query_duration_seconds_count{operation=\"insert\"} 1"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
