//! Which color receives new requests. Read on every request without a lock
//! (one atomic load); changed only by a switch.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use time::OffsetDateTime;
use vigie_telemetry::Color;

use crate::upstream::Upstream;

pub struct Routing {
    blue: Arc<Upstream>,
    green: Arc<Upstream>,
    active: AtomicU8,
    since: Mutex<OffsetDateTime>,
    switches: AtomicU64,
}

fn encode(color: Color) -> u8 {
    match color {
        Color::Blue => 0,
        Color::Green => 1,
    }
}

fn decode(value: u8) -> Color {
    if value == 0 {
        Color::Blue
    } else {
        Color::Green
    }
}

impl Routing {
    pub fn new(blue: Arc<Upstream>, green: Arc<Upstream>, active: Color, since: OffsetDateTime, switches: u64) -> Self {
        Routing {
            blue,
            green,
            active: AtomicU8::new(encode(active)),
            since: Mutex::new(since),
            switches: AtomicU64::new(switches),
        }
    }

    pub fn active(&self) -> Color {
        // SeqCst: see `Upstream::begin`.
        decode(self.active.load(Ordering::SeqCst))
    }

    pub fn upstream(&self, color: Color) -> &Arc<Upstream> {
        match color {
            Color::Blue => &self.blue,
            Color::Green => &self.green,
        }
    }

    pub fn active_upstream(&self) -> &Arc<Upstream> {
        self.upstream(self.active())
    }

    /// When the active color became active.
    pub fn since(&self) -> OffsetDateTime {
        *self.since.lock()
    }

    pub fn switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }

    /// Makes `color` active from now on; only the switch calls this, under
    /// its lock, so `since` and the count follow the color they belong to.
    pub fn activate(&self, color: Color, at: OffsetDateTime) {
        *self.since.lock() = at;
        self.switches.fetch_add(1, Ordering::Relaxed);
        self.active.store(encode(color), Ordering::SeqCst);
    }
}
