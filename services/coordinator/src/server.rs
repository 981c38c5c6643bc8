//! The running coordinator: the HTTP server bound to a listener, and the background loop that
//! reclaims expired leases and steps active searches.
//!
//! [`Application::build`] binds (port 0 works, for tests) and [`Application::run_until_stopped`]
//! serves until the given shutdown future resolves, then drains in-flight requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::{ApiConfig, AppState, Metrics};
use crate::clock::clock_ms;
use crate::search::StepOutcome;
use crate::store::Store;

/// A coordinator ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    state: AppState,
    tick: Duration,
}

impl Application {
    /// Binds `addr` and prepares the state; nothing runs until [`Application::run_until_stopped`].
    pub async fn build(store: Store, config: ApiConfig, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self { listener, state: AppState::new(store, config), tick: Duration::from_millis(1000) })
    }

    /// How often the background loop runs when nothing wakes it.
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves the API and runs the background loop until `shutdown` resolves.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let background = tokio::spawn(background_loop(self.state.clone(), self.tick));
        let app = crate::routes::app(self.state.clone());
        let served = serve(self.listener, app, &self.state.config, shutdown).await;
        background.abort();
        served
    }
}

/// Serves HTTP/1.1 connections until `shutdown` resolves, then lets each connection finish its
/// request in flight and waits for them all.
///
/// Connections are bounded in number ([`ApiConfig::max_connections`]; more wait in the listen
/// backlog) and in time: the headers of every request, and the pause before the next request of
/// a kept-alive connection, must arrive within [`ApiConfig::header_read_timeout`], or the
/// connection is closed. A request's body and handling are bounded by the request timeout in
/// [`crate::routes::app`]. Each request carries the peer's address as `ConnectInfo`.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    config: &ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // pause briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                app.clone().oneshot(request.map(axum::body::Body::new))
            });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout).keep_alive(true);
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let _slot = slot;
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.wait_for(|stop| *stop) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
        // Reap finished connections so the set does not grow with every one ever served.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Reclaims expired leases and steps every active search, on every tick and whenever a result
/// arrives. Errors are logged and retried next tick: a database blip must not stop the service.
pub async fn background_loop(state: AppState, tick: Duration) {
    loop {
        if let Err(e) = background_step(&state).await {
            tracing::warn!(error = %e, "background step failed; retrying");
        }
        let _ = tokio::time::timeout(tick, state.search_changed.notified()).await;
    }
}

/// One pass of the background loop: the step tests call.
pub async fn background_step(state: &AppState) -> Result<(), crate::search::DriverError> {
    let reclaimed = state.store.reclaim_expired(clock_ms()).await?;
    if reclaimed > 0 {
        Metrics::add(&state.metrics.leases_reclaimed, reclaimed);
        state.work_queued.notify_waiters();
    }
    for search in state.store.active_searches().await? {
        // A generation of duplicates is complete at once; keep stepping until the search waits.
        for _ in 0..1000 {
            match state.driver.step(search.id).await? {
                StepOutcome::Proposed { .. } | StepOutcome::Promoted { .. } => {
                    state.work_queued.notify_waiters()
                }
                _ => break,
            }
        }
    }
    Ok(())
}
