//! The log sink behind every vigie process: lines are appended to an
//! in-memory buffer under a short lock, and one writer thread moves the
//! buffer to stdout every [`FLUSH_EVERY`]. A request never waits on stdout
//! and never wakes a thread: under load, thousands of lines leave in one
//! `write` call. Past [`MAX_BUFFERED_BYTES`] (stdout stalled) new lines are
//! dropped and counted. Dropping the [`WriterGuard`] writes what is left.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// How long a line may wait before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(5);
/// Bytes held while stdout is slow before new lines are dropped (about
/// 30,000 request lines).
pub const MAX_BUFFERED_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
struct Shared {
    buffer: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    stop: AtomicBool,
    wake: Condvar,
}

/// Cloneable handle that appends whole lines; a `MakeWriter` for tracing.
#[derive(Debug, Clone)]
pub struct BufferedLines {
    shared: Arc<Shared>,
}

/// Stops the writer thread and flushes on drop.
#[derive(Debug)]
pub struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BufferedLines {
    /// Starts the writer thread on `sink`.
    pub fn start<W: Write + Send + 'static>(mut sink: W) -> std::io::Result<(BufferedLines, WriterGuard)> {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("vigie-log-writer".into())
            .spawn(move || {
                let mut out = Vec::new();
                loop {
                    let stopping = {
                        let mut buffer = worker.buffer.lock();
                        let _ = worker.wake.wait_for(&mut buffer, FLUSH_EVERY);
                        std::mem::swap(&mut *buffer, &mut out);
                        worker.stop.load(Ordering::Acquire)
                    };
                    if !out.is_empty() {
                        // A failed write has nowhere better to be reported.
                        let _ = sink.write_all(&out);
                        let _ = sink.flush();
                        out.clear();
                    }
                    if stopping && worker.buffer.lock().is_empty() {
                        return;
                    }
                }
            })?;
        Ok((
            BufferedLines {
                shared: Arc::clone(&shared),
            },
            WriterGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Appends one complete line, or counts it as dropped when the buffer is full.
    pub fn push(&self, line: &[u8]) {
        let mut buffer = self.shared.buffer.lock();
        if buffer.len() + line.len() > MAX_BUFFERED_BYTES {
            drop(buffer);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            buffer.extend_from_slice(line);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// What tracing writes one formatted line into.
pub struct LineWriter<'a>(&'a BufferedLines);

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferedLines {
    type Writer = LineWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self)
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An in-memory sink for tests of this crate.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct MemorySink(pub(crate) Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl Write for MemorySink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_drops() {
        let sink = MemorySink::default();
        let (lines, guard) = BufferedLines::start(sink.clone()).expect("start");
        for i in 0..10_000 {
            lines.push(format!("line {i}\n").as_bytes());
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().clone()).expect("utf8");
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got.len(), 10_000);
        assert_eq!(got[9_999], "line 9999");
        assert_eq!(lines.dropped(), 0);
    }

    /// A sink that never returns: stdout piped to a stalled reader.
    struct Stalled;

    impl Write for Stalled {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(0)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_stdout_drops_and_counts_lines_instead_of_blocking() {
        let (lines, guard) = BufferedLines::start(Stalled).expect("start");
        // Its thread will be stuck in the stalled sink: never join it.
        std::mem::forget(guard);
        let line = [b'x'; 1024];
        let start = std::time::Instant::now();
        lines.push(b"first\n");
        std::thread::sleep(FLUSH_EVERY * 4); // the writer takes it and stalls
        for _ in 0..(MAX_BUFFERED_BYTES / 1024 + 100) {
            lines.push(&line);
        }
        assert!(start.elapsed() < Duration::from_secs(2), "pushing must not block");
        assert_eq!(lines.dropped(), 100);
    }
}
