//! An in-process server task with its shutdown trigger: what the origin and
//! proxy handles share.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The future a server runs until; resolves when the task is told to stop.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A spawned server; told to stop on drop, or stopped and awaited with
/// [`join`](Self::join).
pub struct ServerTask {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl ServerTask {
    /// Spawns the future `run` builds from a shutdown signal.
    pub fn spawn<Fut>(run: impl FnOnce(Shutdown) -> Fut) -> ServerTask
    where
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (shutdown, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Box::pin(async move {
            let _ = rx.await;
        })));
        ServerTask {
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// True once the server has stopped, on its own or not.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Tells the server to stop, without waiting for it to finish.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Stops the server and waits for it, re-raising a panic from its task.
    pub async fn join(&mut self) -> anyhow::Result<()> {
        self.stop();
        match self.task.take().expect("joined once").await {
            Ok(result) => result,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => Err(err.into()),
        }
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
