//! Workers (an `impl Store` of its own): registration with their device, last-seen times, and
//! the list the devices page shows.

use sqlx::Row;

use super::{NewDevice, Store, StoreError};

impl Store {
    /// Registers (or refreshes) a worker and its device.
    pub async fn register_worker(
        &self,
        worker_id: &str,
        hostname: &str,
        device: &NewDevice,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.upsert_device(device).await?;
        sqlx::query(
            "INSERT INTO workers (id, device, hostname, last_seen_at_ms, created_at_ms)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (id) DO UPDATE
             SET device = excluded.device, hostname = excluded.hostname,
                 last_seen_at_ms = excluded.last_seen_at_ms",
        )
        .bind(worker_id)
        .bind(&device.fingerprint)
        .bind(hostname)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The device fingerprint of a registered worker; `None` for an unknown worker.
    pub async fn worker_device(&self, worker_id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT device FROM workers WHERE id = $1")
            .bind(worker_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Notes that a worker was heard from.
    pub async fn touch_worker(&self, worker_id: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE workers SET last_seen_at_ms = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(worker_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every registered worker: (id, device, hostname, last seen).
    pub async fn list_workers(&self) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT id, device, hostname, last_seen_at_ms FROM workers ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("device")?,
                    r.try_get("hostname")?,
                    r.try_get("last_seen_at_ms")?,
                ))
            })
            .collect()
    }
}
