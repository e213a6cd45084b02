//! A small ordered worker pool: items go in with `submit`, results come out in submission
//! order. It is what lets independent zstd frames compress and decompress on every core
//! while the bundle stays one ordered byte stream, with a bounded number of frames in flight
//! so that memory stays flat whatever the bundle size.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub struct OrderedPool<I: Send + 'static, O: Send + 'static> {
    jobs: Option<SyncSender<(u64, I)>>,
    results: Receiver<(u64, O)>,
    pending: BTreeMap<u64, O>,
    next_in: u64,
    next_out: u64,
    workers: Vec<JoinHandle<()>>,
}

impl<I: Send + 'static, O: Send + 'static> OrderedPool<I, O> {
    /// Starts `threads` workers; each builds its own state once (a zstd context) and maps
    /// items with `work`.
    pub fn new<S, MakeState, Work>(threads: usize, make_state: MakeState, work: Work) -> Self
    where
        MakeState: Fn() -> S + Send + Sync + 'static,
        Work: Fn(&mut S, I) -> O + Send + Sync + 'static,
    {
        let threads = threads.max(1);
        let (job_tx, job_rx) = sync_channel::<(u64, I)>(threads);
        let (res_tx, res_rx) = sync_channel::<(u64, O)>(threads * 2);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let make_state = Arc::new(make_state);
        let work = Arc::new(work);
        let workers = (0..threads)
            .map(|_| {
                let job_rx = Arc::clone(&job_rx);
                let res_tx = res_tx.clone();
                let make_state = Arc::clone(&make_state);
                let work = Arc::clone(&work);
                std::thread::spawn(move || {
                    let mut state = make_state();
                    loop {
                        let job = job_rx.lock().map(|rx| rx.recv());
                        let Ok(Ok((seq, item))) = job else { break };
                        if res_tx.send((seq, work(&mut state, item))).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        OrderedPool {
            jobs: Some(job_tx),
            results: res_rx,
            pending: BTreeMap::new(),
            next_in: 0,
            next_out: 0,
            workers,
        }
    }

    /// Items submitted but not yet returned by `next`.
    pub fn in_flight(&self) -> usize {
        (self.next_in - self.next_out) as usize
    }

    /// Queues an item; blocks while every worker is busy and the queue is full. Results are
    /// buffered meanwhile so the workers never stall on a full result channel.
    pub fn submit(&mut self, item: I) {
        let seq = self.next_in;
        self.next_in += 1;
        let mut item = Some((seq, item));
        while let Some(job) = item.take() {
            let Some(jobs) = &self.jobs else { return };
            match jobs.try_send(job) {
                Ok(()) => {}
                Err(std::sync::mpsc::TrySendError::Full(job)) => {
                    item = Some(job);
                    if let Ok((s, o)) = self.results.recv() {
                        self.pending.insert(s, o);
                    }
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// The next result in submission order, waiting for it; `None` when nothing is in flight.
    pub fn next_result(&mut self) -> Option<O> {
        if self.in_flight() == 0 {
            return None;
        }
        loop {
            if let Some(o) = self.pending.remove(&self.next_out) {
                self.next_out += 1;
                return Some(o);
            }
            let (s, o) = self.results.recv().ok()?;
            self.pending.insert(s, o);
        }
    }

    /// The next result in order if it is already done.
    pub fn try_next(&mut self) -> Option<O> {
        while let Ok((s, o)) = self.results.try_recv() {
            self.pending.insert(s, o);
        }
        let o = self.pending.remove(&self.next_out)?;
        self.next_out += 1;
        Some(o)
    }
}

impl<I: Send + 'static, O: Send + 'static> Drop for OrderedPool<I, O> {
    fn drop(&mut self) {
        self.jobs = None;
        // Unblock workers waiting to send, then join them.
        while self.results.try_recv().is_ok() {}
        for w in self.workers.drain(..) {
            while !w.is_finished() {
                while self.results.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = w.join();
        }
    }
}

/// Worker threads to use: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f` of every item, computed on every core (items taken in turn, results in order):
/// for a handful of large independent jobs such as hashing whole files.
pub fn map_on_every_core<T: Sync, R: Send + Default>(
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    map_on_threads(items, default_threads(), f)
}

/// `f` of every item on `threads` threads (items taken in turn, results in order): for
/// jobs that wait on something other than the CPU, such as registry requests (`--jobs`).
pub fn map_on_threads<T: Sync, R: Send + Default>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Mutex<R>> = items.iter().map(|_| Mutex::new(R::default())).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1).min(items.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { return };
                    let r = f(item);
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = r;
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_default())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order() {
        let mut pool = OrderedPool::new(
            3,
            || (),
            |_: &mut (), x: u64| {
                std::thread::sleep(std::time::Duration::from_millis(x % 3));
                x * 2
            },
        );
        let mut out = Vec::new();
        for i in 0..50 {
            pool.submit(i);
            while let Some(o) = pool.try_next() {
                out.push(o);
            }
        }
        while let Some(o) = pool.next_result() {
            out.push(o);
        }
        assert_eq!(out, (0..50).map(|x| x * 2).collect::<Vec<_>>());
    }
}
