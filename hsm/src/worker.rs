//! One thread owns one hardware session; everyone else sends it jobs.
//!
//! Invariant: the backend value never leaves its thread, so non-`Sync` sessions are
//! never shared and calls to the device are serialised.

use std::sync::{mpsc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use crate::HsmError;

type Job<B> = Box<dyn FnOnce(&mut B) + Send>;

/// Worker threads not yet finished. A worker unloads its library (PKCS#11 module, TCTI)
/// when its last handle is dropped; if that races with `exit()` running the same
/// library's destructors, SoftHSM crashes (double free / SIGSEGV at exit). The process
/// therefore waits for them ([`wait_for_workers`]) before it exits.
static LIVE_WORKERS: Mutex<usize> = Mutex::new(0);
static WORKERS_DONE: Condvar = Condvar::new();

/// Counts one worker thread as live until dropped (after its backend).
struct Live;

impl Live {
    fn new() -> Self {
        *LIVE_WORKERS.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut n = LIVE_WORKERS.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        WORKERS_DONE.notify_all();
    }
}

/// Wait until every worker thread has dropped its backend (all handles gone), at most
/// `timeout`. Call before the process exits. Returns false on timeout.
pub fn wait_for_workers(timeout: Duration) -> bool {
    let n = LIVE_WORKERS.lock().unwrap_or_else(|p| p.into_inner());
    let (n, _) = WORKERS_DONE
        .wait_timeout_while(n, timeout, |n| *n > 0)
        .unwrap_or_else(|p| p.into_inner());
    *n == 0
}

/// A handle to a thread that owns a backend `B` (a [`crate::KeyBackend`] or a
/// [`crate::MonotonicCounter`]). Cheap to clone.
pub struct HsmWorker<B: ?Sized> {
    jobs: mpsc::Sender<Job<B>>,
}

impl<B: ?Sized> Clone for HsmWorker<B> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<B: ?Sized + 'static> HsmWorker<B> {
    /// Start the worker thread. `open` runs on the new thread and builds the backend
    /// there; its error is returned here.
    pub fn spawn<F>(name: &str, open: F) -> Result<Self, HsmError>
    where
        F: FnOnce() -> Result<Box<B>, HsmError> + Send + 'static,
    {
        let (jobs, inbox) = mpsc::channel::<Job<B>>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), HsmError>>();
        let live = Live::new();
        thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // Declared first, dropped last: after the backend (and its library).
                let _live = live;
                let mut backend = match open() {
                    Ok(b) => {
                        let _ = ready_tx.send(Ok(()));
                        b
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Runs until every handle is dropped.
                while let Ok(job) = inbox.recv() {
                    job(&mut backend);
                }
            })
            .map_err(|e| HsmError::Device {
                op: "spawn worker",
                reason: e.to_string(),
            })?;
        ready_rx.recv().map_err(|_| HsmError::WorkerGone)??;
        Ok(Self { jobs })
    }

    /// Queue `f` for the worker thread; the receiver yields its result.
    fn submit<R, F>(&self, f: F) -> Result<tokio::sync::oneshot::Receiver<R>, HsmError>
    where
        R: Send + 'static,
        F: FnOnce(&mut B) -> R + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |b: &mut B| {
                let _ = tx.send(f(b));
            }))
            .map_err(|_| HsmError::WorkerGone)?;
        Ok(rx)
    }

    /// Run `f` on the worker thread and await its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, HsmError>
    where
        R: Send + 'static,
        F: FnOnce(&mut B) -> R + Send + 'static,
    {
        self.submit(f)?.await.map_err(|_| HsmError::WorkerGone)
    }

    /// Run `f` on the worker thread and block the calling thread for its result.
    /// For CLI code and tests outside an async runtime.
    pub fn call_blocking<R, F>(&self, f: F) -> Result<R, HsmError>
    where
        R: Send + 'static,
        F: FnOnce(&mut B) -> R + Send + 'static,
    {
        self.submit(f)?.blocking_recv().map_err(|_| HsmError::WorkerGone)
    }
}
