//! The control plane's durable state behind a small `Store` trait (a
//! cluster backend can come later), with the embedded redb backend in the
//! data dir. Records are opaque bytes (JSON, see `records`) keyed by id,
//! one table per kind. Every `write` is committed durably (fsync) before
//! it returns: the API replies only after that.
//!
//! Never called from a worker: file I/O happens here.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, TableDefinition};
use thiserror::Error;

/// What kind of record (one table each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Endpoints,
    ReservedDomains,
    Credentials,
    ApiKeys,
    TlsCertificates,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Endpoints,
        Kind::ReservedDomains,
        Kind::Credentials,
        Kind::ApiKeys,
        Kind::TlsCertificates,
    ];

    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(match self {
            Kind::Endpoints => "endpoints",
            Kind::ReservedDomains => "reserved_domains",
            Kind::Credentials => "credentials",
            Kind::ApiKeys => "api_keys",
            Kind::TlsCertificates => "tls_certificates",
        })
    }
}

/// One change in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(Kind, String, Vec<u8>),
    Delete(Kind, String),
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("the store is closed (the edge is handing over or stopping)")]
    Closed,
    #[error("the store {path} is still locked by another process after {waited:?}")]
    Locked { path: PathBuf, waited: Duration },
    #[error("store: {0}")]
    Db(String),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Durable key-value state of the control plane.
pub trait Store: Send + Sync + 'static {
    fn get(&self, kind: Kind, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every record of a kind, by id ascending.
    fn list(&self, kind: Kind) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies the batch atomically; durable when it returns `Ok`.
    fn write(&self, batch: Vec<Write>) -> Result<(), StoreError>;
    /// Releases the backing file (an upgrade hands it to the next
    /// process); later calls fail with `Closed`.
    fn close(&self);
    /// Takes the backing file back after `close` (an upgrade that failed).
    fn reopen(&self) -> Result<(), StoreError>;
}

/// The embedded backend: one redb file.
#[derive(Debug)]
pub struct RedbStore {
    path: PathBuf,
    db: RwLock<Option<Database>>,
}

/// The store's file in a data dir.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state.redb")
}

impl RedbStore {
    /// Opens (or creates) the store, retrying while another process holds
    /// its lock, for up to `timeout`.
    pub fn open_with_retry(path: &Path, timeout: Duration) -> Result<RedbStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(db_err)?;
        }
        let start = Instant::now();
        loop {
            match Database::create(path) {
                Ok(db) => {
                    let store = RedbStore {
                        path: path.to_owned(),
                        db: RwLock::new(Some(db)),
                    };
                    store.create_tables()?;
                    return Ok(store);
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(StoreError::Locked {
                        path: path.to_owned(),
                        waited: start.elapsed(),
                    })
                }
                Err(e) => return Err(db_err(format!("{}: {e}", path.display()))),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        let db = guard.as_ref().ok_or(StoreError::Closed)?;
        let tx = db.begin_write().map_err(db_err)?;
        for k in Kind::ALL {
            tx.open_table(k.table()).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Closed),
        }
    }
}

impl Store for RedbStore {
    fn get(&self, kind: Kind, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(db_err)?;
            let t = tx.open_table(kind.table()).map_err(db_err)?;
            Ok(t.get(id).map_err(db_err)?.map(|v| v.value().to_vec()))
        })
    }

    fn list(&self, kind: Kind) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(db_err)?;
            let t = tx.open_table(kind.table()).map_err(db_err)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    fn write(&self, batch: Vec<Write>) -> Result<(), StoreError> {
        self.with_db(|db| {
            // redb commits with Durability::Immediate by default: the data
            // is on disk (fsync) when commit returns.
            let tx = db.begin_write().map_err(db_err)?;
            for w in &batch {
                match w {
                    Write::Put(kind, id, value) => {
                        let mut t = tx.open_table(kind.table()).map_err(db_err)?;
                        t.insert(id.as_str(), value.as_slice()).map_err(db_err)?;
                    }
                    Write::Delete(kind, id) => {
                        let mut t = tx.open_table(kind.table()).map_err(db_err)?;
                        t.remove(id.as_str()).map_err(db_err)?;
                    }
                }
            }
            tx.commit().map_err(db_err)
        })
    }

    fn close(&self) {
        let mut guard = self.db.write().unwrap_or_else(|p| p.into_inner());
        *guard = None;
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let mut guard = self.db.write().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(Database::create(&self.path).map_err(db_err)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_list_delete_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = store_path(dir.path());
        let s = RedbStore::open_with_retry(&path, Duration::from_secs(1)).expect("open");
        s.write(vec![
            Write::Put(Kind::Endpoints, "ep_2".into(), b"two".to_vec()),
            Write::Put(Kind::Endpoints, "ep_1".into(), b"one".to_vec()),
        ])
        .expect("write");
        s.write(vec![Write::Delete(Kind::Endpoints, "ep_2".into())])
            .expect("delete");
        s.close();
        assert!(matches!(
            s.get(Kind::Endpoints, "ep_1"),
            Err(StoreError::Closed)
        ));
        let s = RedbStore::open_with_retry(&path, Duration::from_secs(1)).expect("reopen");
        assert_eq!(
            s.list(Kind::Endpoints).expect("list"),
            vec![("ep_1".to_owned(), b"one".to_vec())]
        );
        assert_eq!(s.get(Kind::ApiKeys, "x").expect("get"), None);
    }

    #[test]
    fn second_open_waits_then_reports_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = store_path(dir.path());
        let first = RedbStore::open_with_retry(&path, Duration::from_secs(1)).expect("open");
        let e = RedbStore::open_with_retry(&path, Duration::from_millis(120)).expect_err("locked");
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
        first.close();
        RedbStore::open_with_retry(&path, Duration::from_secs(1)).expect("open after close");
    }
}
