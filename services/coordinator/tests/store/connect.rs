//! Opening stores: URLs, migrations, SQLite file handling.

use std::time::Duration;

use coordinator::{Backend, Store, StoreError, StoreOptions};

use crate::helpers::TestDb;

pub async fn migrations_run_twice_without_error(db: TestDb) {
    let search =
        db.store.create_search("before reopen", &serde_json::json!({})).await.expect("create search");

    let reopened = Store::connect(&db.url).await.expect("second connect runs migrations again");

    let found = reopened.get_search(search.id).await.expect("read search");
    assert_eq!(found, Some(search), "reopening must keep the data");
    reopened.close().await;
}

pub async fn store_reports_its_backend(db: TestDb) {
    let expected = if db.url.starts_with("sqlite://") { Backend::Sqlite } else { Backend::Postgres };
    assert_eq!(db.store.backend(), expected);
}

#[tokio::test]
async fn unknown_url_scheme_is_a_clear_error() {
    let err = Store::connect("mysql://root@localhost/frontier").await.expect_err("mysql is refused");

    assert!(matches!(&err, StoreError::UnsupportedScheme { scheme } if scheme == "mysql"));
    let message = err.to_string();
    assert!(message.contains("scheme `mysql`"), "message names the scheme: {message}");
    assert!(message.contains("sqlite://") && message.contains("postgres://"), "{message}");
}

#[tokio::test]
async fn url_without_a_scheme_is_a_clear_error() {
    let err = Store::connect("frontier.db").await.expect_err("a bare path is refused");

    assert!(matches!(err, StoreError::MissingScheme));
    assert!(err.to_string().contains("no scheme"), "{err}");
}

#[tokio::test]
async fn unreachable_postgres_is_a_typed_error() {
    // Port 1 is never a Postgres server; the short timeout bounds the pool's connect retries.
    let options = StoreOptions { acquire_timeout: Duration::from_millis(500), ..Default::default() };

    let err = Store::connect_with("postgres://postgres@127.0.0.1:1/frontier", &options)
        .await
        .expect_err("nothing listens on port 1");

    assert!(
        matches!(err, StoreError::Connect { backend: Backend::Postgres, .. }),
        "expected a connect error, got {err:?}"
    );
}

#[tokio::test]
async fn sqlite_file_is_created_if_missing_and_uses_a_write_ahead_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested-name.db");
    assert!(!path.exists());

    let store = Store::connect(&format!("sqlite://{}", path.display())).await.expect("open");
    store.create_search("s", &serde_json::json!({})).await.expect("write");

    assert!(path.exists(), "the database file is created");
    let wal = dir.path().join("nested-name.db-wal");
    assert!(wal.exists(), "an open WAL-mode database keeps a -wal file beside it");
    store.close().await;
}
