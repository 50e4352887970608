//! Typed JetStream key-value buckets with compare-and-set, for state every
//! node must see the same: QR sessions, SMS codes.
//!
//! A change is read → decide → write-if-unchanged (the revision), retried
//! when another node wrote first, so two nodes never both win a transition
//! (two phones scanning one QR code, two logins using one SMS code).

use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Cluster, Error};

/// Tries of a compare-and-set before giving up (each lost try means another
/// node changed the key in between).
const CAS_TRIES: usize = 16;

/// How long one call may take in all, NATS slow or down included (the
/// client's queue waits for a reconnect): then it is an error.
pub const KV_TIMEOUT: Duration = Duration::from_secs(5);

async fn bounded<T>(f: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::time::timeout(KV_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(Error::Nats(format!("no answer within {KV_TIMEOUT:?}"))))
}

/// One bucket of `T` values.
#[derive(Clone)]
pub struct Bucket<T> {
    store: kv::Store,
    _values: std::marker::PhantomData<fn() -> T>,
}

/// A change seen by [`Bucket::watch`]: the key and its value (`None` once
/// deleted), with the revision it was written at.
pub struct Change<T> {
    pub key: String,
    pub value: Option<T>,
    pub revision: u64,
}

impl<T: Serialize + DeserializeOwned> Bucket<T> {
    /// Opens bucket `name`, creating it if no node has. Entries older than
    /// `max_age` are dropped by the server. Stored on disk, so a NATS restart
    /// keeps live sessions.
    pub async fn open(cluster: &Cluster, name: &str, max_age: Duration) -> Result<Self, Error> {
        let js = cluster.jetstream();
        // The stream a key-value bucket is, made directly: the client's
        // `create_key_value` first reads account fields that servers before
        // 2.10 (Debian's) do not send.
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(Error::nats)?;
        let store = js.get_key_value(name).await.map_err(Error::nats)?;
        Ok(Self {
            store,
            _values: std::marker::PhantomData,
        })
    }

    /// The value of `key` and its revision.
    pub async fn get(&self, key: &str) -> Result<Option<(T, u64)>, Error> {
        let entry = bounded(async { self.store.entry(key).await.map_err(Error::nats) }).await?;
        Ok(entry.and_then(|e| match e.operation {
            Operation::Put => serde_json::from_slice(&e.value)
                .ok()
                .map(|v| (v, e.revision)),
            Operation::Delete | Operation::Purge => None,
        }))
    }

    /// Writes `value` if `key` holds nothing; its revision, or `None` when taken.
    pub async fn create(&self, key: &str, value: &T) -> Result<Option<u64>, Error> {
        bounded(async {
            match self.store.create(key, encode(value)).await {
                Ok(rev) => Ok(Some(rev)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(Error::nats(e)),
            }
        })
        .await
    }

    /// Changes `key` with `decide`, which sees the current value (if any)
    /// and answers the new one (`None` deletes, `Keep` writes nothing) with
    /// its result. Retried when another node wrote the key in between.
    pub async fn change<R, E>(
        &self,
        key: &str,
        decide: impl FnMut(Option<T>) -> Result<(Write<T>, R), E>,
    ) -> Result<Result<(R, Option<u64>), E>, Error> {
        bounded(self.change_unbounded(key, None, decide)).await
    }

    /// [`change`](Self::change) starting from `known`, a value and its
    /// revision this node already has (its mirror's): when nobody wrote
    /// since, one round trip instead of two.
    pub async fn change_from<R, E>(
        &self,
        key: &str,
        known: (T, u64),
        decide: impl FnMut(Option<T>) -> Result<(Write<T>, R), E>,
    ) -> Result<Result<(R, Option<u64>), E>, Error> {
        bounded(self.change_unbounded(key, Some(known), decide)).await
    }

    async fn change_unbounded<R, E>(
        &self,
        key: &str,
        mut known: Option<(T, u64)>,
        mut decide: impl FnMut(Option<T>) -> Result<(Write<T>, R), E>,
    ) -> Result<Result<(R, Option<u64>), E>, Error> {
        for _ in 0..CAS_TRIES {
            let from_known = known.is_some();
            let (current, revision) = match known.take() {
                Some((value, revision)) => (Some(value), Some(revision)),
                None => match self.store.entry(key).await.map_err(Error::nats)? {
                    Some(e) if e.operation == Operation::Put => {
                        (serde_json::from_slice(&e.value).ok(), Some(e.revision))
                    }
                    Some(e) => (None, Some(e.revision)),
                    None => (None, None),
                },
            };
            let decided = decide(current);
            // A refusal or "nothing to do" decided on a copy that may be
            // behind (a scan through another node) is checked on the server.
            if from_known && matches!(decided, Err(_) | Ok((Write::Keep, _))) {
                continue;
            }
            let (write, result) = match decided {
                Ok(decided) => decided,
                Err(e) => return Ok(Err(e)),
            };
            let written = match (write, revision) {
                (Write::Keep, _) => return Ok(Ok((result, None))),
                (Write::Put(v), Some(rev)) => self
                    .store
                    .update(key, encode(&v), rev)
                    .await
                    .map(Some)
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
                (Write::Put(v), None) => self
                    .store
                    .create(key, encode(&v))
                    .await
                    .map(Some)
                    .map_err(|e| {
                        (
                            e.kind() == kv::CreateErrorKind::AlreadyExists,
                            e.to_string(),
                        )
                    }),
                (Write::Delete, rev) => self
                    .store
                    .delete_expect_revision(key, rev)
                    .await
                    .map(|_| None)
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
            };
            match written {
                Ok(rev) => return Ok(Ok((result, rev))),
                // Another node wrote first: decide again on its value.
                Err((true, _)) => continue,
                Err((false, e)) => return Err(Error::Nats(e)),
            }
        }
        Err(Error::Nats(format!(
            "{key}: changed by other nodes {CAS_TRIES} times in a row"
        )))
    }

    /// Deletes `key` whatever it holds.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        bounded(async { self.store.delete(key).await.map_err(Error::nats) }).await
    }

    /// Every key's latest value, then every change as it happens.
    pub async fn watch(&self) -> Result<impl Stream<Item = Change<T>> + use<T>, Error> {
        let watch = self.store.watch_all().await.map_err(Error::nats)?;
        Ok(watch.filter_map(|entry| async move {
            let e = entry.ok()?;
            let value = match e.operation {
                Operation::Put => Some(serde_json::from_slice(&e.value).ok()?),
                Operation::Delete | Operation::Purge => None,
            };
            Some(Change {
                key: e.key,
                value,
                revision: e.revision,
            })
        }))
    }
}

/// What [`Bucket::change`] writes.
pub enum Write<T> {
    Put(T),
    Delete,
    Keep,
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    serde_json::to_vec(value).expect("serializable").into()
}
