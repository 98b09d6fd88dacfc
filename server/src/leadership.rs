//! A node of the replicated log serves clients only while it leads: each time it becomes the
//! leader (with everything committed before applied), it opens its store and serves; when it
//! stops leading it closes them again, and follows (serving what a follower serves, see
//! [`crate::following`]) until it leads again. See docs/replication.md.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use eddy_storage::Replica;
use tokio::sync::watch;
use tracing::{info, warn};

/// What ends one term's serving: this node stopped leading, or the server is stopping.
pub type Until = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Runs `serve` for each term this node leads, handing it the term and what ends its serving,
/// and `follow` while it waits to lead (stopped, and awaited, before `serve` starts), until
/// `shutdown` completes.
pub async fn serve_while_leading<S, F, W, G>(
    replica: &Replica,
    shutdown: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    mut follow: W,
    mut serve: S,
) -> anyhow::Result<()>
where
    S: FnMut(u64, Until) -> F,
    F: Future<Output = anyhow::Result<()>>,
    W: FnMut() -> G,
    G: Future<Output = ()> + Send + 'static,
{
    let (stop, stopping) = watch::channel(None::<Result<(), String>>);
    tokio::spawn(async move {
        let outcome = shutdown.await.map_err(|e| format!("{e:#}"));
        let _ = stop.send(Some(outcome));
    });
    let stopped =
        |stopping: &watch::Receiver<Option<Result<(), String>>>| stopping.borrow().clone();
    loop {
        info!(node = replica.id(), "waiting to lead the replicated log");
        let following = tokio::spawn(follow());
        let led = {
            let mut stop = stopping.clone();
            tokio::select! {
                led = replica.await_leading(Duration::from_secs(3600)) => Some(led),
                _ = stop.wait_for(Option::is_some) => None,
            }
        };
        // The follower's listeners close before the leader's open on the same ports.
        following.abort();
        let _ = following.await;
        let term = match led {
            Some(Ok(term)) => term,
            Some(Err(e)) => {
                // Raft stopped for good (a storage fault): nothing here can lead or follow
                // again, so the server stops, for its supervisor to restart it.
                if let Some(fault) = replica.status().fault() {
                    replica.shutdown().await?;
                    anyhow::bail!(
                        "the replicated log stopped on node {}: {fault}; restart the node",
                        replica.id()
                    );
                }
                warn!(node = replica.id(), error = %e, "could not take the lead; waiting to lead again");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            None => break,
        };
        info!(
            node = replica.id(),
            term, "this node leads the replicated log; serving clients"
        );
        let status = replica.status().clone();
        let mut stop = stopping.clone();
        let until: Until = Box::pin(async move {
            tokio::select! {
                () = status.await_not_leading(term) => Ok(()),
                outcome = stop.wait_for(Option::is_some) => match outcome.ok().and_then(|o| o.clone()) {
                    Some(Err(e)) => Err(anyhow::anyhow!(e)),
                    _ => Ok(()),
                },
            }
        });
        let served = serve(term, until).await;
        if stopped(&stopping).is_some() {
            served?;
            break;
        }
        match served {
            Ok(()) => warn!(
                node = replica.id(),
                term, "this node no longer leads; its listeners are closed until it leads again"
            ),
            Err(e) => {
                warn!(node = replica.id(), term, error = %format!("{e:#}"), "serving as the leader failed; waiting to lead again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    replica.shutdown().await?;
    match stopped(&stopping) {
        Some(Err(e)) => Err(anyhow::anyhow!(e)),
        _ => Ok(()),
    }
}
