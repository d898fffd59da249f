//! A fixed set of threads for CPU-bound verification (hash checks,
//! signatures, MST inversion), shared by every host task.
//!
//! Not tokio's blocking pool: that one grows to hundreds of threads for
//! work that waits, while this work never waits and is best run with one
//! thread per core. Not the async workers either: a signature check held
//! there would delay every socket and timer of the process.

use std::thread;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The verification threads. Dropping the pool lets them finish the
/// queued jobs and exit.
pub(crate) struct Pool {
    tx: Option<crossbeam_channel::Sender<Job>>,
}

impl Pool {
    /// `threads` threads (0: one per available core).
    pub(crate) fn new(threads: usize) -> Pool {
        let threads = if threads == 0 {
            thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let mut started = 0;
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = thread::Builder::new()
                .name(format!("barn-verify-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        // A job that panics (a bug on hostile input) drops
                        // its sender, so its waiter sees an error; the
                        // thread stays for the next job.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!(error = %e, "cannot start a verification thread"),
            }
        }
        // With no thread at all, jobs run on the caller (slow, but right).
        Pool {
            tx: (started > 0).then_some(tx),
        }
    }

    /// Runs `f` on a pool thread; its result arrives on the receiver. The
    /// receiver reports an error only if the job panicked.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (done, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The receiver may be gone (shutdown): nothing to tell.
            let _ = done.send(f());
        });
        match &self.tx {
            Some(tx) => {
                if let Err(crossbeam_channel::SendError(job)) = tx.send(job) {
                    job();
                }
            }
            None => job(),
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn jobs_run_off_the_caller_and_answer_in_any_order() {
        let pool = Pool::new(2);
        let caller = thread::current().id();
        let rxs: Vec<_> = (0..100u64)
            .map(|i| pool.run(move || (i * i, thread::current().id())))
            .collect();
        for (i, rx) in rxs.into_iter().enumerate() {
            let (sq, id) = rx.await.unwrap();
            assert_eq!(sq, (i * i) as u64);
            assert_ne!(id, caller);
        }
    }

    #[tokio::test]
    async fn a_panicking_job_reports_an_error_and_the_pool_goes_on() {
        let pool = Pool::new(1);
        let bad = pool.run(|| -> u8 { panic!("job failed") });
        assert!(bad.await.is_err());
        assert_eq!(pool.run(|| 7u8).await.unwrap(), 7);
    }
}
