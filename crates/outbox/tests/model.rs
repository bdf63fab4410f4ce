//! Model-based test: random append / deliver / crash-and-reopen sequences against an
//! in-memory model of per-key FIFO queues. After every step the outbox and the model
//! agree on depth, keys, each key's head and the capacity rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};

use beamline_core::{BreakerKey, ProviderId, TenantId};
use beamline_outbox::{NewMessage, Outbox, OutboxError};
use bytes::Bytes;
use proptest::prelude::*;

/// `cases` cases; failures are saved to (and replayed from) `proptest-regressions/model.txt` in the crate,
/// committed. (proptest's default location is derived from the source path, which it
/// cannot resolve from a workspace member's directory.)
fn persisted(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/model.txt"),
        )),
        ..ProptestConfig::default()
    }
}

const CAPACITY: usize = 8;

#[derive(Clone, Debug)]
enum Step {
    Append(u8),
    Deliver(u8),
    /// Drop the outbox without any shutdown (the writer thread ends with the channel) and
    /// open the file again, as after a crash.
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![4 => (0u8..3).prop_map(Step::Append), 3 => (0u8..3).prop_map(Step::Deliver), 1 => Just(Step::Reopen)]
}

fn key(k: u8) -> BreakerKey {
    BreakerKey::new(
        TenantId::try_new("t").unwrap(),
        ProviderId::try_new(&format!("p{k}")).unwrap(),
    )
}

proptest! {
    #![proptest_config(persisted(12))]

    #[test]
    fn outbox_matches_a_fifo_model_across_crashes(steps in proptest::collection::vec(step(), 1..30)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("outbox.redb");
            let mut outbox = Some(Outbox::open(&path, CAPACITY).unwrap());
            let mut model: BTreeMap<u8, VecDeque<String>> = BTreeMap::new();
            let mut next_id = 0u32;
            for step in steps {
                let o = outbox.as_ref().unwrap();
                match step {
                    Step::Append(k) => {
                        let id = format!("m{next_id}");
                        next_id += 1;
                        let message = NewMessage {
                            tenant: key(k).tenant().clone(),
                            provider: key(k).provider().clone(),
                            message_id: id.clone(),
                            payload: Bytes::from(id.clone().into_bytes()),
                            enqueued_unix_ms: u64::from(next_id),
                        };
                        let depth: usize = model.values().map(VecDeque::len).sum();
                        match o.append(message).await {
                            Ok(_) => {
                                prop_assert!(depth < CAPACITY);
                                model.entry(k).or_default().push_back(id);
                            }
                            Err(OutboxError::Full { .. }) => prop_assert_eq!(depth, CAPACITY),
                            Err(e) => prop_assert!(false, "append failed: {e}"),
                        }
                    }
                    Step::Deliver(k) => {
                        let head = o.head(&key(k)).unwrap();
                        let expected = model.get_mut(&k).and_then(VecDeque::pop_front);
                        prop_assert_eq!(head.as_ref().map(|h| h.message.message_id.clone()), expected);
                        if let Some(h) = head {
                            prop_assert_eq!(&h.message.payload[..], h.message.message_id.as_bytes());
                            o.remove(h.seq).await.unwrap();
                        }
                    }
                    Step::Reopen => {
                        drop(outbox.take());
                        outbox = Some(Outbox::open(&path, CAPACITY).unwrap());
                    }
                }
                let o = outbox.as_ref().unwrap();
                let depth: usize = model.values().map(VecDeque::len).sum();
                prop_assert_eq!(o.depth(), depth);
                let mut keys: Vec<BreakerKey> = model.iter().filter(|(_, q)| !q.is_empty()).map(|(k, _)| key(*k)).collect();
                let mut got = o.keys();
                keys.sort();
                got.sort();
                prop_assert_eq!(got, keys);
                for (k, q) in &model {
                    let head = o.head(&key(*k)).unwrap().map(|h| h.message.message_id);
                    prop_assert_eq!(head, q.front().cloned());
                }
            }
            Ok(())
        })?;
    }
}
