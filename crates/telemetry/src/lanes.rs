//! Lanes: single-threaded runtimes, each on a thread of its own, that a
//! listener hands its connections to in turn (as nginx hands them to its
//! worker processes). A connection and all the work of its requests stay
//! on one thread: no task moves between cores, no worker wakes another, and
//! what a lane keeps for reuse (the router's upstream connections) is its
//! own. On the router this cut the user CPU time per request by about a
//! sixth against the shared work-stealing runtime (docs/benchmarks.md).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The most lanes a process runs; [`current`] is at most this.
pub const MAX_LANES: usize = 64;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The lane this thread runs: 1 to [`MAX_LANES`] on a lane's thread, 0 on
/// any other thread.
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// The lanes of a listener; dropping them stops their threads (a task
/// still on a lane is dropped with its runtime).
#[derive(Debug)]
pub struct Lanes {
    lanes: Vec<Lane>,
    next: AtomicUsize,
}

#[derive(Debug)]
struct Lane {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl Lanes {
    /// Starts `count` lanes (at least 1, at most [`MAX_LANES`]) on threads
    /// named `name-1`, `name-2`, ...
    pub fn start(count: usize, name: &str) -> std::io::Result<Lanes> {
        let mut lanes = Vec::new();
        for index in 1..=count.clamp(1, MAX_LANES) {
            let (started, handle) = std::sync::mpsc::channel();
            let (stop, stopped) = oneshot::channel::<()>();
            // The runtime is built, run and dropped on its own thread: never
            // dropped where blocking is not allowed (the caller may be async).
            std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let _ = started.send(Err(error));
                            return;
                        }
                    };
                    CURRENT.with(|lane| lane.set(index));
                    let _ = started.send(Ok(runtime.handle().clone()));
                    // Runs the lane's tasks until told to stop (or the
                    // sender is dropped).
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            // A brief wait, once per lane at start-up.
            let handle = handle
                .recv()
                .map_err(|_| std::io::Error::other("a lane's thread ended before it started"))??;
            lanes.push(Lane {
                handle,
                stop: Some(stop),
            });
        }
        Ok(Lanes {
            lanes,
            next: AtomicUsize::new(0),
        })
    }

    /// How many lanes run.
    pub fn count(&self) -> usize {
        self.lanes.len()
    }

    /// The runtime of the next lane, in turn: connections spread evenly.
    pub fn next(&self) -> &Handle {
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        &self.lanes[at].handle
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        for lane in &mut self.lanes {
            if let Some(stop) = lane.stop.take() {
                let _ = stop.send(());
            }
        }
    }
}

/// The default number of lanes: one per core this process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_LANES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_are_handed_out_in_turn_and_each_lane_knows_its_number() {
        let lanes = Lanes::start(3, "test-lane").expect("start");
        assert_eq!(lanes.count(), 3);
        assert_eq!(current(), 0, "a thread outside the lanes is lane 0");
        let mut seen = Vec::new();
        for _ in 0..6 {
            let lane = lanes
                .next()
                .spawn(async { (current(), std::thread::current().name().map(str::to_owned)) });
            seen.push(lane.await.expect("ran"));
        }
        let numbers: Vec<usize> = seen.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [1, 2, 3, 1, 2, 3]);
        assert_eq!(seen[1].1.as_deref(), Some("test-lane-2"));
    }

    #[tokio::test]
    async fn dropping_the_lanes_stops_their_tasks() {
        let lanes = Lanes::start(1, "test-lane").expect("start");
        let (_keep, never) = oneshot::channel::<()>();
        let task = lanes.next().spawn(async move {
            let _ = never.await;
        });
        drop(lanes);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("the lane's task ends within 5 s");
        assert!(ended.expect_err("cancelled, not finished").is_cancelled());
    }

    #[test]
    fn the_count_is_kept_within_one_and_the_maximum() {
        assert_eq!(Lanes::start(0, "test-lane").expect("start").count(), 1);
        assert_eq!(
            Lanes::start(MAX_LANES + 5, "test-lane").expect("start").count(),
            MAX_LANES
        );
        assert!((1..=MAX_LANES).contains(&default_count()));
    }
}
