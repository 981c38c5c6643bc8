//! The server's bounds, on a real listener: idle, slow-header and slow-body connections are
//! closed within the configured timeouts (with one-second timeouts here), requests over the
//! concurrency limit are answered 503, and a lease long-poll answers before the request timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use coordinator::app::ApiConfig;
use coordinator::server::Application;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestDb;
use crate::protocol::register;
use crate::requests::{ADMIN, WORKER, api_with, post, send};

/// Timeouts short enough to test: headers (and idle time) 1 s, a whole request 2 s.
fn short_timeouts() -> ApiConfig {
    let mut config = ApiConfig::new(ADMIN, WORKER);
    config.header_read_timeout = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(2);
    config
}

/// A coordinator serving `config` on a free local port until the returned sender is dropped.
async fn serve(db: &TestDb, config: ApiConfig) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let app =
        Application::build(db.store.clone(), config, SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Reads until the server closes the connection (or resets it); returns what it sent and when
/// it closed. Fails after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Instant) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&received).into_owned(), Instant::now()),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection was still open after {limit:?}: {}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
}

/// Writes `bytes` one at a time, `pause` apart, until done or the connection breaks.
fn trickle(mut writer: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>, pause: Duration) {
    tokio::spawn(async move {
        for b in bytes {
            if writer.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    });
}

pub async fn idle_and_slow_connections_are_closed_within_the_timeouts(db: TestDb) {
    let (addr, _stop) = serve(&db, short_timeouts()).await;
    let slack = Duration::from_secs(4);

    // A connection that sends nothing, without a token.
    let opened = Instant::now();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut idle, slack).await;
    let held = closed - opened;
    assert!(held >= Duration::from_millis(900) && held < Duration::from_secs(3), "idle held {held:?}");

    // Headers sent a byte every 100 ms: the header timeout counts from the first byte awaited.
    let opened = Instant::now();
    let (mut read, write) = TcpStream::connect(addr).await.unwrap().into_split();
    let headers = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    trickle(write, headers.to_vec(), Duration::from_millis(100));
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + slack;
    loop {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("a slow-header connection stayed open"),
        }
    }
    let held = opened.elapsed();
    assert!(held < Duration::from_secs(3), "slow headers held {held:?}");
    assert!(!String::from_utf8_lossy(&received).contains("200 OK"), "the request was never served");

    // A body sent a byte every 100 ms: answered 408 at the request timeout, then closed.
    let opened = Instant::now();
    let (mut read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
    let head = format!(
        "POST /api/v1/searches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    write.write_all(head.as_bytes()).await.unwrap();
    trickle(write, vec![b' '; 1000], Duration::from_millis(100));
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + slack;
    loop {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("a slow-body connection stayed open: {}", String::from_utf8_lossy(&received)),
        }
    }
    let held = opened.elapsed();
    let response = String::from_utf8_lossy(&received);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("\"error\""), "a JSON error body: {response}");
    assert!(held >= Duration::from_millis(1900) && held < Duration::from_secs(4), "slow body held {held:?}");
    assert!(db.store.list_searches().await.unwrap().is_empty());

    // A kept-alive connection that goes idle after a request is closed too.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    let (_, closed) = read_until_closed(&mut kept, slack).await;
    assert!(closed - answered < Duration::from_secs(3), "idle keep-alive held {:?}", closed - answered);
}

pub async fn requests_over_the_concurrency_limit_are_answered_503(db: TestDb) {
    let mut config = ApiConfig::new(ADMIN, WORKER);
    config.max_concurrent_requests = 1;
    let (router, _) = api_with(&db.store, config);
    register(&router, "w1").await;
    // One request held: a long-poll for work that never comes.
    let held = {
        let router = router.clone();
        tokio::spawn(async move {
            post(&router, "/api/v1/workers/lease", WORKER, &json!({ "worker_id": "w1", "wait_ms": 1500 }))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, err) = send(&router, Method::GET, "/api/v1/searches", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert!(err["error"].as_str().unwrap().contains("retry"), "{err}");
    let (status, _) = send(&router, Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "liveness is answered whatever the load");
    assert_eq!(held.await.unwrap().0, StatusCode::NO_CONTENT);
    let (status, _) = send(&router, Method::GET, "/api/v1/searches", None, None).await;
    assert_eq!(status, StatusCode::OK, "the slot is free again");
    // Over a real connection the refusal says when to retry.
    let mut config = ApiConfig::new(ADMIN, WORKER);
    config.max_concurrent_requests = 1;
    let (addr, _stop) = serve(&db, config).await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let poll = client
        .post(format!("{base}/api/v1/workers/lease"))
        .bearer_auth(WORKER)
        .json(&json!({ "worker_id": "w1", "wait_ms": 1500 }))
        .send();
    let poll = tokio::spawn(poll);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = client.get(format!("{base}/api/v1/searches")).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(poll.await.unwrap().unwrap().status().as_u16(), 204);
}

pub async fn a_lease_long_poll_answers_before_the_request_timeout(db: TestDb) {
    let mut config = short_timeouts();
    config.max_long_poll = Duration::from_secs(20);
    let (router, _) = api_with(&db.store, config);
    register(&router, "w1").await;
    let started = Instant::now();
    let (status, body) =
        post(&router, "/api/v1/workers/lease", WORKER, &json!({ "worker_id": "w1", "wait_ms": 20_000 }))
            .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "the long-poll was capped below the request timeout: {waited:?}"
    );
}
