//! The log sink behind every vigie process: lines are appended to an
//! in-memory buffer under a short lock, and one writer thread moves the
//! buffer to stdout every [`FLUSH_EVERY`]. A request never waits on stdout
//! and, under load, never wakes a thread: thousands of lines leave in one
//! `write` call. After a period with no line the writer sleeps until the
//! next one comes (that line wakes it), so an idle process does not wake up
//! 200 times a second. Past [`MAX_BUFFERED_BYTES`] (stdout stalled) new
//! lines are dropped and counted. Dropping the [`WriterGuard`] writes what
//! is left.

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
    /// Set under the `buffer` lock.
    stop: AtomicBool,
    /// The writer waits for a line with no deadline; the next push wakes it.
    /// Read and written under the `buffer` lock.
    sleeping: AtomicBool,
    wake: Condvar,
    /// Times the writer woke up.
    #[cfg(test)]
    rounds: AtomicU64,
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
                // The last period brought no line.
                let mut quiet = false;
                loop {
                    let stopping = {
                        let mut buffer = worker.buffer.lock();
                        if quiet && buffer.is_empty() && !worker.stop.load(Ordering::Acquire) {
                            worker.sleeping.store(true, Ordering::Relaxed);
                            worker.wake.wait(&mut buffer);
                            worker.sleeping.store(false, Ordering::Relaxed);
                        } else {
                            let _ = worker.wake.wait_for(&mut buffer, FLUSH_EVERY);
                        }
                        #[cfg(test)]
                        worker.rounds.fetch_add(1, Ordering::Relaxed);
                        std::mem::swap(&mut *buffer, &mut out);
                        worker.stop.load(Ordering::Acquire)
                    };
                    quiet = out.is_empty();
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
            // A plain load on the busy path; the store only after a quiet period.
            if self.shared.sleeping.load(Ordering::Relaxed) {
                self.shared.sleeping.store(false, Ordering::Relaxed);
                self.shared.wake.notify_one();
            }
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
        {
            // Under the lock, so that a writer about to sleep sees it.
            let _buffer = self.shared.buffer.lock();
            self.shared.stop.store(true, Ordering::Release);
            self.shared.wake.notify_one();
        }
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

    /// Waits (5 s at most) until the writer sleeps with no deadline.
    fn wait_until_asleep(lines: &BufferedLines) {
        let start = std::time::Instant::now();
        while !lines.shared.sleeping.load(Ordering::Relaxed) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the idle writer never went to sleep"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn an_idle_writer_sleeps_and_the_next_line_wakes_it() {
        let sink = MemorySink::default();
        let (lines, guard) = BufferedLines::start(sink.clone()).expect("start");
        lines.push(b"first\n");
        wait_until_asleep(&lines);
        let rounds = lines.shared.rounds.load(Ordering::Relaxed);
        std::thread::sleep(FLUSH_EVERY * 40);
        let idle_rounds = lines.shared.rounds.load(Ordering::Relaxed) - rounds;
        // Polling every FLUSH_EVERY would be about 40 rounds.
        assert!(
            idle_rounds <= 1,
            "{idle_rounds} wake-ups in an idle period of 40 flush periods"
        );
        assert_eq!(String::from_utf8_lossy(&sink.0.lock()), "first\n");

        // A line after the quiet period wakes the writer and is written.
        let pushed = std::time::Instant::now();
        lines.push(b"second\n");
        while !String::from_utf8_lossy(&sink.0.lock()).ends_with("second\n") {
            assert!(
                pushed.elapsed() < Duration::from_secs(5),
                "the line after a quiet period was not written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // A line pushed just before the guard drops is written too.
        wait_until_asleep(&lines);
        lines.push(b"third\n");
        drop(guard);
        assert_eq!(String::from_utf8_lossy(&sink.0.lock()), "first\nsecond\nthird\n");
    }

    #[test]
    fn dropping_the_guard_of_a_sleeping_writer_returns() {
        let (lines, guard) = BufferedLines::start(MemorySink::default()).expect("start");
        wait_until_asleep(&lines);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(guard);
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(5)).is_ok(),
            "the writer did not stop"
        );
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
