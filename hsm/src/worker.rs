//! One thread owns one hardware session; everyone else sends it jobs.
//!
//! Invariant: the backend value never leaves its thread, so non-`Sync` sessions are
//! never shared and calls to the device are serialised.

use std::sync::mpsc;
use std::thread;

use crate::HsmError;

type Job<B> = Box<dyn FnOnce(&mut B) + Send>;

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
        thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
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

    /// Run `f` on the worker thread and await its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, HsmError>
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
        rx.await.map_err(|_| HsmError::WorkerGone)
    }

    /// Run `f` on the worker thread and block the calling thread for its result.
    /// For CLI code and tests outside an async runtime.
    pub fn call_blocking<R, F>(&self, f: F) -> Result<R, HsmError>
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
        rx.blocking_recv().map_err(|_| HsmError::WorkerGone)
    }
}
