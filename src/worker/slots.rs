//! The worker's concurrency limit (`worker.concurrency`): one semaphore permit per version
//! in flight, resizable by a reload while versions are held (a decrease retires permits as
//! they come back).

use std::sync::Arc;

use tokio::sync::Semaphore;

/// The concurrency limit, adjustable while versions are in flight.
pub(super) struct Slots {
    pub(super) sem: Arc<Semaphore>,
    /// Permits in existence (held or available).
    total: usize,
    /// Permits still to retire after a decrease (retired as they come back).
    debt: usize,
}

impl Slots {
    pub(super) fn new(n: usize) -> Self {
        Self {
            sem: Arc::new(Semaphore::new(n)),
            total: n,
            debt: 0,
        }
    }

    pub(super) fn resize(&mut self, to: usize) {
        let current = self.total - self.debt;
        if to > current {
            let add = (to - current).saturating_sub(self.debt);
            let cancel = (to - current).min(self.debt);
            self.debt -= cancel;
            self.sem.add_permits(add);
            self.total += add;
        } else {
            self.debt += current - to;
        }
        self.retire();
    }

    pub(super) fn retire(&mut self) {
        if self.debt > 0 {
            let n = self.sem.forget_permits(self.debt);
            self.debt -= n;
            self.total -= n;
        }
    }

    pub(super) fn in_flight(&self) -> usize {
        self.total - self.sem.available_permits()
    }

    pub(super) async fn all_back(&self) {
        let all = u32::try_from(self.total).unwrap_or(u32::MAX);
        let _ = self.sem.acquire_many(all).await;
    }
}
