//! Peers allowed to send images, added in the web console (`dicom_peers`). They join the
//! `[[dicom.peers]]` of the configuration file; the DICOM node re-reads them every few seconds
//! (`crate::dicom::Node::allowed_peers`). Validation (AE title rules, address syntax) is the
//! caller's: the console form checks with the configuration's own rules before storing.

use super::{Result, Store};

/// A peer to store.
#[derive(Clone, Debug, PartialEq)]
pub struct NewPeer {
    /// Calling AE title (exact match; unique among console peers).
    pub ae_title: String,
    /// Addresses or CIDR blocks it may connect from; empty: any address.
    pub addresses: Vec<String>,
    /// Seconds without new instances after which its series are complete; `None`: default.
    pub stable_after_s: Option<f64>,
    /// Disabled peers are refused like unknown ones.
    pub enabled: bool,
}

/// A stored console peer.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPeer {
    /// `dicom_peers.id`.
    pub id: i64,
    /// The peer.
    pub peer: NewPeer,
    /// When it was last changed (ms since the Unix epoch).
    pub updated_at_ms: i64,
    /// Who changed it last.
    pub updated_by: String,
}

type Row = (i64, String, String, Option<f64>, bool, i64, String);

fn addresses_text(addresses: &[String]) -> String {
    addresses.join(",")
}

impl Store {
    /// Adds a peer; returns its id.
    ///
    /// # Errors
    /// The driver's error (an AE title already listed).
    pub async fn add_peer(&self, p: &NewPeer, by: &str) -> Result<i64> {
        let now = self.now_ms();
        Ok(on_backend!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO dicom_peers
                     (ae_title, addresses, stable_after_s, enabled, updated_at_ms, updated_by)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(&p.ae_title)
            .bind(addresses_text(&p.addresses))
            .bind(p.stable_after_s)
            .bind(p.enabled)
            .bind(now)
            .bind(by)
            .fetch_one(pool)
            .await?
        }))
    }

    /// Replaces a peer; returns whether it exists.
    ///
    /// # Errors
    /// The driver's error (an AE title already listed).
    pub async fn update_peer(&self, id: i64, p: &NewPeer, by: &str) -> Result<bool> {
        let now = self.now_ms();
        let changed = on_backend!(self, |pool| {
            sqlx::query(
                "UPDATE dicom_peers SET ae_title = $2, addresses = $3, stable_after_s = $4,
                     enabled = $5, updated_at_ms = $6, updated_by = $7
                 WHERE id = $1",
            )
            .bind(id)
            .bind(&p.ae_title)
            .bind(addresses_text(&p.addresses))
            .bind(p.stable_after_s)
            .bind(p.enabled)
            .bind(now)
            .bind(by)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Enables or disables a peer; returns whether it exists.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn set_peer_enabled(&self, id: i64, enabled: bool, by: &str) -> Result<bool> {
        let now = self.now_ms();
        let changed = on_backend!(self, |pool| {
            sqlx::query(
                "UPDATE dicom_peers SET enabled = $2, updated_at_ms = $3, updated_by = $4
                 WHERE id = $1",
            )
            .bind(id)
            .bind(enabled)
            .bind(now)
            .bind(by)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Every console peer, by AE title.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn list_peers(&self) -> Result<Vec<StoredPeer>> {
        let rows: Vec<Row> = on_backend!(self, |pool| {
            sqlx::query_as(
                "SELECT id, ae_title, addresses, stable_after_s, enabled, updated_at_ms,
                        updated_by
                 FROM dicom_peers ORDER BY ae_title",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(id, ae_title, addresses, stable_after_s, enabled, updated_at_ms, updated_by)| {
                    StoredPeer {
                        id,
                        peer: NewPeer {
                            ae_title,
                            addresses: addresses
                                .split(',')
                                .map(str::trim)
                                .filter(|a| !a.is_empty())
                                .map(str::to_owned)
                                .collect(),
                            stable_after_s,
                            enabled,
                        },
                        updated_at_ms,
                        updated_by,
                    }
                },
            )
            .collect())
    }

    /// One console peer.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn peer(&self, id: i64) -> Result<Option<StoredPeer>> {
        Ok(self.list_peers().await?.into_iter().find(|p| p.id == id))
    }
}
