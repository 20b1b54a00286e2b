//! Running a piece of async work inside another process's network namespace, from the agent (root
//! on the node): a dedicated thread enters the namespace with `setns(2)` and runs the work on its
//! own single-threaded runtime, so every socket it opens lives there. Used for the egress checks,
//! which must see the world exactly as a host behind that namespace's firewall and tunnel does.

use std::fs::File;
use std::future::Future;

use nix::sched::{CloneFlags, setns};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening the network namespace of process {pid}: {source}")]
    Open { pid: i64, source: std::io::Error },
    #[error("entering the network namespace of process {pid}: {source}")]
    Enter { pid: i64, source: nix::Error },
    #[error("namespace thread: {0}")]
    Thread(std::io::Error),
    #[error("the namespace thread ended without an answer")]
    Lost,
}

/// Runs `work()` in the network namespace of process `pid` and returns its output. Threads the
/// work starts (the runtime's blocking pool, name lookups) are created by the entered thread and
/// share its namespace.
pub async fn run_in<W, F, T>(pid: i64, work: W) -> Result<T, Error>
where
    W: FnOnce() -> F + Send + 'static,
    F: Future<Output = T>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ccp-netns".into())
        .spawn(move || {
            let result = (|| {
                let ns = File::open(format!("/proc/{pid}/ns/net"))
                    .map_err(|source| Error::Open { pid, source })?;
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Enter { pid, source })?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(Error::Thread)?;
                Ok(runtime.block_on(work()))
            })();
            let _ = tx.send(result);
        })
        .map_err(Error::Thread)?;
    rx.await.map_err(|_| Error::Lost)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_and_a_missing_process_is_an_error() {
        let own = i64::from(std::process::id());
        let answer = run_in(own, || async { 6 * 7 }).await;
        match answer {
            Ok(v) => assert_eq!(v, 42),
            // Entering even one's own namespace needs CAP_SYS_ADMIN.
            Err(Error::Enter { .. }) => {
                crate::skip_unless_required("CCP_REQUIRE_NETNS", "setns is not permitted here");
            }
            Err(e) => panic!("{e}"),
        }
        assert!(matches!(run_in(-1, || async {}).await, Err(Error::Open { .. })));
    }
}
