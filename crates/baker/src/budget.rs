//! What one bake may still allocate and how long it may still run, checked
//! where the memory is allocated.
//!
//! A recipe can make a bake grow without bound: a string that doubles at
//! every element (`string-set: s string(s) string(s)`), a subtree copied
//! into itself pass after pass, `nodes()` copies of a growing bucket. Each
//! of those allocates in one place — a node in the arena, text computed or
//! copied, a copy queued as an action — and is charged there against a
//! budget sized from the input ([`Limits`](crate::Limits)), so the bake
//! fails with [`CollateError::Limit`] naming the rule before the memory is
//! taken, instead of after the process ran out of it.
//!
//! The wall-clock limit is a flag set by a watchdog thread when the
//! deadline passes, read (one relaxed load) at every step of the walk and
//! of the apply loop and inside the loops that can be long on their own
//! (copying a subtree, collecting its text), so it fires even when one
//! step is expensive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::CollateError;

/// The budgets of one bake.
#[derive(Debug)]
pub(crate) struct Budget {
    /// Nodes the arena may hold.
    pub(crate) max_nodes: usize,
    /// Copies queued by the actions of the current pass, each sure to add
    /// at least one node when applied.
    reserved_nodes: usize,
    /// Bytes of text created so far (computed strings, text and attribute
    /// values written, text copied with a subtree).
    text_used: u64,
    max_text: u64,
    /// Set by the [`Watchdog`] once the bake is out of time.
    expired: Option<Arc<AtomicBool>>,
    max_duration_ms: u64,
}

impl Budget {
    /// No bound but `max_nodes` (parsing, and trees built in tests).
    pub(crate) fn nodes_only(max_nodes: usize) -> Budget {
        Budget {
            max_nodes,
            reserved_nodes: 0,
            text_used: 0,
            max_text: u64::MAX,
            expired: None,
            max_duration_ms: 0,
        }
    }

    /// Bounds text to `max_text` bytes and time to what `watchdog` allows.
    pub(crate) fn limit(&mut self, max_text: u64, watchdog: Option<&Watchdog>) {
        self.max_text = max_text;
        if let Some(w) = watchdog {
            self.expired = Some(w.expired.clone());
            self.max_duration_ms = w.limit_ms;
        }
    }

    /// Fails once the deadline has passed.
    #[inline]
    pub(crate) fn time(&self) -> Result<(), CollateError> {
        match &self.expired {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(CollateError::limit(
                "bake time in milliseconds",
                self.max_duration_ms,
            )),
            _ => Ok(()),
        }
    }

    /// Charges `bytes` of new text.
    #[inline]
    pub(crate) fn text(&mut self, bytes: usize) -> Result<(), CollateError> {
        self.text_used = self.text_used.saturating_add(bytes as u64);
        if self.text_used > self.max_text {
            return Err(CollateError::limit(
                "text created by the recipe, in bytes",
                self.max_text,
            ));
        }
        self.time()
    }

    /// Charges one more node to an arena of `len` nodes.
    #[inline]
    pub(crate) fn node(&self, len: usize) -> Result<(), CollateError> {
        if len.saturating_add(self.reserved_nodes) >= self.max_nodes {
            return Err(CollateError::limit("node count", self.max_nodes as u64));
        }
        self.time()
    }

    /// Reserves a node for a copy queued now and made when the pass's
    /// actions are applied.
    pub(crate) fn reserve_node(&mut self, len: usize) -> Result<(), CollateError> {
        self.node(len)?;
        self.reserved_nodes += 1;
        Ok(())
    }

    /// The queued copies were made (or dropped): their reservations end.
    pub(crate) fn release_reserved(&mut self) {
        self.reserved_nodes = 0;
    }
}

/// A thread that raises a flag when a bake's time is up; stopped (and
/// joined) when dropped.
pub(crate) struct Watchdog {
    expired: Arc<AtomicBool>,
    limit_ms: u64,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching a bake allowed to run for `limit`.
    pub(crate) fn start(limit: Duration) -> Watchdog {
        let expired = Arc::new(AtomicBool::new(false));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let deadline = Instant::now() + limit;
        let (flag, signal) = (expired.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("bake-watchdog".into())
            .spawn(move || {
                let (lock, cvar) = &*signal;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !*stopped {
                    let now = Instant::now();
                    if now >= deadline {
                        flag.store(true, Ordering::Relaxed);
                        return;
                    }
                    stopped = cvar
                        .wait_timeout(stopped, deadline - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            })
            .ok();
        // Without a thread (the system refused one) the flag is set at once if the
        // limit is zero, and never otherwise: the bake is then bounded by its
        // memory budgets only.
        if thread.is_none() && limit.is_zero() {
            expired.store(true, Ordering::Relaxed);
        }
        Watchdog {
            expired,
            limit_ms: limit.as_millis().min(u64::MAX as u128) as u64,
            stop,
            thread,
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_nodes_are_bounded() {
        let mut b = Budget::nodes_only(10);
        b.limit(100, None);
        assert!(b.text(60).is_ok());
        let e = b.text(41).unwrap_err();
        assert!(e.to_string().contains("text created"), "{e}");
        assert!(b.node(8).is_ok());
        b.reserve_node(8).unwrap();
        assert!(b.node(9).is_err());
        b.release_reserved();
        assert!(b.node(9).is_ok());
    }

    #[test]
    fn the_watchdog_raises_the_flag_at_the_deadline_and_stops_when_dropped() {
        let w = Watchdog::start(Duration::from_millis(20));
        let mut b = Budget::nodes_only(10);
        b.limit(u64::MAX, Some(&w));
        assert!(b.time().is_ok());
        let t = Instant::now();
        while b.time().is_ok() {
            assert!(t.elapsed() < Duration::from_secs(5), "the flag never rose");
            std::thread::yield_now();
        }
        drop(w);
        let quick = Instant::now();
        drop(Watchdog::start(Duration::from_secs(3600)));
        assert!(
            quick.elapsed() < Duration::from_secs(1),
            "drop joins promptly"
        );
    }
}
