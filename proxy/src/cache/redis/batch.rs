//! Coalesces the reads of concurrent lookups into one Redis pipeline.
//!
//! Under load, many requests look up the same few keys at once: one entry
//! and one tag generation, say, for a popular route. Sent one by one, each
//! read costs Redis a command and the proxy a round trip through the client;
//! batched, a key read by 30 waiting requests is read once.
//!
//! A read only ever joins a batch that has not been sent yet, never one in
//! flight, so it still reaches Redis after its request began and sees every
//! write acknowledged before that: the guarantee a read of its own gives.
//! One batch is in flight at a time; reads arriving meanwhile form the
//! next, so batches grow with load and a lone read is sent at once.
//!
//! Each read names its lane: the reads one pipeline may carry together
//! (on one node, all; on a cluster, those of the slots one primary
//! serves). A batch sends one pipeline per lane, concurrently: one round
//! trip to each node involved, never one per key. Each read also names its
//! group (its bucket's, on a cluster), whose breaker the outcome is
//! recorded in.

use std::collections::HashMap;
use std::future::Future;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::STAMP_LEN;
use crate::cache::StoreError;
use crate::redis_layer::Lane;

/// Most reads one pipeline carries.
const MAX_BATCH: usize = 256;

/// What a lookup needs of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The whole stored value.
    Value,
    /// Only its stamp: enough to confirm an L1 copy.
    Stamp,
}

/// One lookup's read: a part of the entry and its tags' generations.
pub struct Read {
    /// Which pipeline may carry it.
    pub lane: Lane,
    /// Whose breaker its outcome counts in.
    pub group: usize,
    pub entry_key: String,
    pub part: Part,
    pub generation_keys: Vec<String>,
}

/// The replies to a read (the entry part, then each generation, in order)
/// or to a pipeline (one per command); `None` where a key is absent.
pub type ReadResult = Result<Vec<Option<Bytes>>, StoreError>;

type Job = (Read, oneshot::Sender<ReadResult>);

pub struct ReadBatcher {
    queue: mpsc::UnboundedSender<Job>,
}

impl ReadBatcher {
    /// Starts the batching task; `execute` sends one lane's pipeline
    /// (carrying reads of the groups listed) and returns its replies in
    /// order. The task ends when the batcher is dropped.
    pub fn start<F, Fut>(execute: F) -> ReadBatcher
    where
        F: Fn(Lane, Vec<usize>, redis::Pipeline) -> Fut + Send + 'static,
        Fut: Future<Output = ReadResult> + Send + 'static,
    {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run(jobs, execute));
        ReadBatcher { queue }
    }

    pub async fn read(&self, read: Read) -> ReadResult {
        let (reply, answer) = oneshot::channel();
        self.queue.send((read, reply)).map_err(|_| StoreError::Unavailable)?;
        answer.await.map_err(|_| StoreError::Unavailable)?
    }
}

async fn run<F, Fut>(mut jobs: mpsc::UnboundedReceiver<Job>, execute: F)
where
    F: Fn(Lane, Vec<usize>, redis::Pipeline) -> Fut,
    Fut: Future<Output = ReadResult>,
{
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let first = &batch[0].0;
        if batch
            .iter()
            .all(|(read, _)| read.lane == first.lane && read.group == first.group)
        {
            // One node, or one bucket: the common case, sent as it is.
            let (lane, group) = (first.lane.clone(), first.group);
            let plan = Plan::new(&batch);
            let replies = execute(lane, vec![group], plan.pipeline).await;
            answer(batch.drain(..), plan.slots, replies);
            continue;
        }
        let mut lanes: HashMap<Lane, Vec<Job>> = HashMap::new();
        for job in batch.drain(..) {
            lanes.entry(job.0.lane.clone()).or_default().push(job);
        }
        let sends = lanes.into_iter().map(|(lane, jobs)| {
            let plan = Plan::new(&jobs);
            let mut groups: Vec<usize> = jobs.iter().map(|(read, _)| read.group).collect();
            groups.sort_unstable();
            groups.dedup();
            let replies = execute(lane, groups, plan.pipeline);
            async move { answer(jobs, plan.slots, replies.await) }
        });
        futures_util::future::join_all(sends).await;
    }
}

/// Hands each read of one pipeline the replies it needs.
fn answer(jobs: impl IntoIterator<Item = Job>, slots: Vec<Vec<usize>>, replies: ReadResult) {
    for ((_, reply), slots) in jobs.into_iter().zip(slots) {
        let answer = match &replies {
            Ok(values) => slots
                .iter()
                .map(|&slot| values.get(slot).cloned())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| StoreError::Backend("fewer replies than commands".into())),
            Err(e) => Err(e.clone()),
        };
        // The requester may have gone (client disconnected): nothing to do.
        let _ = reply.send(answer);
    }
}

/// One command per distinct key (and part) in a batch, and for each read
/// the replies it needs.
struct Plan {
    pipeline: redis::Pipeline,
    slots: Vec<Vec<usize>>,
}

impl Plan {
    fn new(batch: &[Job]) -> Plan {
        let mut pipeline = redis::pipe();
        let mut commands = HashMap::new();
        let slots = batch
            .iter()
            .map(|(read, _)| {
                let mut slots = Vec::with_capacity(1 + read.generation_keys.len());
                slots.push(command(&mut commands, &mut pipeline, read.part, &read.entry_key));
                for key in &read.generation_keys {
                    slots.push(command(&mut commands, &mut pipeline, Part::Value, key));
                }
                slots
            })
            .collect();
        Plan { pipeline, slots }
    }
}

/// The reply slot of the command reading `part` of `key`, adding the
/// command to `pipeline` the first time it is asked for.
fn command<'a>(
    commands: &mut HashMap<(Part, &'a str), usize>,
    pipeline: &mut redis::Pipeline,
    part: Part,
    key: &'a str,
) -> usize {
    let next = commands.len();
    *commands.entry((part, key)).or_insert_with(|| {
        match part {
            Part::Value => pipeline.cmd("GET").arg(key),
            Part::Stamp => pipeline.cmd("GETRANGE").arg(key).arg(0).arg(STAMP_LEN - 1),
        };
        next
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn read(part: Part, entry_key: &str, generation_keys: &[&str]) -> Read {
        Read {
            lane: Lane::Single,
            group: 0,
            entry_key: entry_key.into(),
            part,
            generation_keys: generation_keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn reads_of_the_same_keys_share_one_command_each() {
        let batch: Vec<Job> = [
            read(Part::Value, "e1", &["g1"]),
            read(Part::Value, "e1", &["g1"]),
            read(Part::Stamp, "e1", &["g1", "g2"]),
            read(Part::Value, "g2", &[]),
        ]
        .into_iter()
        .map(|r| (r, oneshot::channel().0))
        .collect();
        let plan = Plan::new(&batch);
        // GET e1, GET g1, GETRANGE e1, GET g2: a stamp and a value of one
        // key are different commands; a key read as an entry or as a
        // generation is the same one.
        assert_eq!(plan.pipeline.len(), 4);
        assert_eq!(plan.slots, vec![vec![0, 1], vec![0, 1], vec![2, 1, 3], vec![3]]);
    }

    /// Answers each command with its position in the pipeline.
    fn numbering(_lane: Lane, _groups: Vec<usize>, pipeline: redis::Pipeline) -> std::future::Ready<ReadResult> {
        std::future::ready(Ok((0..pipeline.len())
            .map(|i| Some(Bytes::from(i.to_string())))
            .collect()))
    }

    #[tokio::test]
    async fn each_read_gets_the_replies_of_its_own_keys() {
        let batcher = ReadBatcher::start(numbering);
        let values = batcher.read(read(Part::Value, "e", &["g1", "g2"])).await.unwrap();
        let expected: Vec<Option<Bytes>> = ["0", "1", "2"].iter().map(|v| Some(Bytes::from(*v))).collect();
        assert_eq!(values, expected);
    }

    #[tokio::test]
    async fn concurrent_reads_share_pipelines_and_each_gets_its_answer() {
        let pipelines = Arc::new(AtomicUsize::new(0));
        let counted = pipelines.clone();
        let batcher = Arc::new(ReadBatcher::start(move |_lane, _groups, pipeline: redis::Pipeline| {
            counted.fetch_add(1, Ordering::SeqCst);
            let replies = pipeline
                .cmd_iter()
                .map(|cmd| cmd.args_iter().nth(1).map(|arg| Bytes::from(format!("{arg:?}"))))
                .collect();
            async move {
                tokio::task::yield_now().await;
                Ok(replies)
            }
        }));
        let reads: Vec<_> = (0..50)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move {
                    let values = batcher
                        .read(read(Part::Value, &format!("e{}", i % 3), &["g"]))
                        .await
                        .unwrap();
                    (i, values)
                })
            })
            .collect();
        for r in reads {
            let (i, values) = r.await.unwrap();
            let echoed = |key: &str| Some(Bytes::from(format!("{:?}", redis::Arg::Simple(key.as_bytes()))));
            assert_eq!(values, vec![echoed(&format!("e{}", i % 3)), echoed("g")]);
        }
        assert!(
            pipelines.load(Ordering::SeqCst) < 50,
            "no read was batched with another"
        );
    }

    #[tokio::test]
    async fn reads_share_their_lanes_pipeline_which_lists_their_groups() {
        // Each reply names the lane and the groups its pipeline was sent for.
        let batcher = Arc::new(ReadBatcher::start(
            |lane: Lane, groups: Vec<usize>, pipeline: redis::Pipeline| {
                let Lane::Slot(lane) = lane else {
                    panic!("unexpected lane")
                };
                std::future::ready(Ok((0..pipeline.len())
                    .map(|_| Some(Bytes::from(format!("{lane}:{groups:?}"))))
                    .collect()))
            },
        ));
        let reads: Vec<_> = (0..40)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move {
                    let mut r = read(Part::Value, &format!("e{i}"), &["g"]);
                    // Two lanes, four groups: groups 0 and 2 in lane 0.
                    (r.lane, r.group) = (Lane::Slot((i % 2) as u16), i % 4);
                    (i, batcher.read(r).await.unwrap())
                })
            })
            .collect();
        for r in reads {
            let (i, values) = r.await.unwrap();
            let reply = values[0].clone().unwrap();
            let reply = std::str::from_utf8(&reply).unwrap();
            let (lane, groups) = reply.split_once(':').unwrap();
            assert_eq!(lane, (i % 2).to_string(), "read {i} went down another lane");
            assert!(
                groups.contains(&(i % 4).to_string()),
                "read {i}'s group is not listed: {groups}"
            );
            assert_eq!(values[0], values[1], "one pipeline answered read {i}");
        }
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_read_in_it_and_a_short_reply_is_an_error() {
        let failing = ReadBatcher::start(|_, _, _| std::future::ready(Err(StoreError::Timeout)));
        assert!(matches!(
            failing.read(read(Part::Value, "e", &[])).await,
            Err(StoreError::Timeout)
        ));
        let short = ReadBatcher::start(|_, _, _| std::future::ready(Ok(vec![None])));
        assert!(matches!(
            short.read(read(Part::Value, "e", &["g"])).await,
            Err(StoreError::Backend(_))
        ));
    }
}
