//! Throwaway databases for the benchmarks (`queue_bench`, `ui_bench`): a fresh Postgres database
//! beside the one a URL names, dropped afterwards, or a SQLite file in a temporary directory.

use sqlx::migrate::MigrateDatabase;

/// A database that exists until [`ScratchDatabase::remove`] (Postgres) or drop (SQLite).
#[derive(Debug)]
pub struct ScratchDatabase {
    /// The URL to open it with.
    pub url: String,
    postgres: bool,
    _dir: Option<tempfile::TempDir>,
}

impl ScratchDatabase {
    /// For a `postgres://` URL, a new database named `{prefix}_{random}` on the same server;
    /// otherwise a SQLite file in a new temporary directory.
    pub async fn create(url: &str, prefix: &str) -> Result<Self, Box<dyn std::error::Error>> {
        sqlx::any::install_default_drivers();
        if url.starts_with("postgres") {
            let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
            let url = format!("{base}/{prefix}_{:016x}", rand::random::<u64>());
            sqlx::Any::create_database(&url).await?;
            Ok(Self { url, postgres: true, _dir: None })
        } else {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join(format!("{prefix}.db")).display());
            Ok(Self { url, postgres: false, _dir: Some(dir) })
        }
    }

    /// Drops the Postgres database (close every pool on it first); removes the SQLite directory.
    pub async fn remove(self) -> Result<(), Box<dyn std::error::Error>> {
        if self.postgres {
            sqlx::Any::force_drop_database(&self.url).await?;
        }
        Ok(())
    }
}
