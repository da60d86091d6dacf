//! A kept admin connection that answers, cheaply and often, which of some
//! databases exist: how a Database's failure is seen in a second rather than
//! at its next full probe. A connection that closes is heard at once.

use tokio::sync::{Mutex, oneshot};
use tokio_postgres::Client;

use super::{PgError, Target};
use crate::providers::database::{EngineError, InstanceWatch};

pub struct Watch {
    client: Client,
    ended: Mutex<oneshot::Receiver<()>>,
}

impl Watch {
    /// Opens the kept connection (to the `postgres` database, as the admin).
    pub async fn open(target: &Target) -> Result<Self, PgError> {
        let (client, ended) = target.connect_kept("postgres").await?;
        Ok(Self {
            client,
            ended: Mutex::new(ended),
        })
    }
}

impl InstanceWatch for Watch {
    async fn present(&self, names: &[String]) -> Result<Vec<String>, EngineError> {
        let rows = self
            .client
            .query(
                "SELECT datname::text FROM pg_database WHERE datname = ANY($1) ORDER BY 1",
                &[&names],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn closed(&self) {
        let mut ended = self.ended.lock().await;
        let _ = (&mut *ended).await;
    }
}
