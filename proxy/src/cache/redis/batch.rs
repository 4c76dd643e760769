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
//! One batch is in flight at a time under load; reads arriving meanwhile
//! form the next, so batches grow with load and a lone read is sent at
//! once. At light load a second batch may go out while a small one is
//! awaited: a read arriving just after a batch left would otherwise wait
//! out that whole round trip before its own began, and a small batch
//! coalesces little anyway.
//!
//! Each read names its lane: the reads one pipeline may carry together
//! (on one node, all; on a cluster, those of the slots one primary
//! serves). A batch sends one pipeline per lane, concurrently: one round
//! trip to each node involved, never one per key. Each read also names its
//! group (its bucket's, on a cluster), whose breaker the outcome is
//! recorded in.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::STAMP_LEN;
use crate::cache::StoreError;
use crate::guard::gcra::Cell;
use crate::redis_layer::Lane;

/// Most reads one pipeline carries.
const MAX_BATCH: usize = 256;

/// Most batches sent and not yet answered (see the module's comment).
const MAX_IN_FLIGHT: usize = 2;

/// A second batch goes out only while fewer reads than this are in
/// flight: light load, where waiting is what a read costs. Under load
/// (tens of reads a batch) batches stay one at a time, each coalescing
/// all the reads of a round trip into one pipeline.
const LIGHT_LOAD_READS: usize = 4;

/// The GCRA step (see [`crate::guard::gcra::admit`]) for `ARGV[3]`
/// requests at once in the cell `KEYS[1]` (interval `ARGV[1]` µs, burst
/// `ARGV[2]`), on Redis's clock; replies "allowed tat now". Formatted with
/// `%.0f`: a Lua number prints 1.7e15 in exponent form otherwise. The write
/// is a `pcall`: a Redis out of memory (`noeviction`) refuses it, and the
/// script must still answer, or its error would fail the whole pipeline
/// (every lookup in the batch); the requests are then allowed uncounted.
pub const LIMIT_SCRIPT: &str = r#"local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call("GET", KEYS[1]) or now)
if tat < now then tat = now end
local k = math.floor((now + burst * interval - tat) / interval)
if k > n then k = n end
if k < 0 then k = 0 end
if k > 0 then
  tat = tat + k * interval
  redis.pcall("SET", KEYS[1], string.format("%.0f", tat), "PX", string.format("%.0f", math.ceil((tat - now) / 1000) + 1))
end
return string.format("%.0f %.0f %.0f", k, tat, now)"#;

/// One command a read needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    /// `GET`: a whole value (an entry, a generation).
    Get(String),
    /// Only an entry's stamp: enough to confirm an L1 copy.
    Stamp(String),
    /// `ZSCORE key member` (the key shared by every request naming it).
    Score(Arc<str>, String),
    /// `HGET key field`.
    Field(Arc<str>, String),
    /// One request counted in a rate limit's cell. Never shared like the
    /// reads: the requests of one batch counting in one cell are counted
    /// by one script call, each told its place among them.
    Limit { key: String, cell: Cell },
}

/// One lookup's or check's commands, all for one lane.
pub struct Read {
    /// Which pipeline may carry it.
    pub lane: Lane,
    /// Whose breaker its outcome counts in.
    pub group: usize,
    pub commands: Vec<Command>,
}

/// One command's reply to one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `None` where a key is absent.
    pub value: Option<Bytes>,
    /// For a [`Command::Limit`], this read's place (from 0) among the
    /// batch's requests counted in its cell; 0 otherwise.
    pub ordinal: u32,
}

/// The replies to a pipeline (one per command), `None` where a key is
/// absent.
pub type ReadResult = Result<Vec<Option<Bytes>>, StoreError>;
/// The replies to one read, one per command in order.
pub type ReadReplies = Result<Vec<Reply>, StoreError>;

type Job = (Read, oneshot::Sender<ReadReplies>);

pub struct ReadBatcher {
    queue: mpsc::UnboundedSender<Job>,
    /// Reads queued, in flight, or sent alone and not yet answered.
    outstanding: Arc<AtomicUsize>,
}

impl ReadBatcher {
    /// Starts the batching task; `execute` sends one lane's pipeline
    /// (carrying reads of the groups listed) and returns its replies in
    /// order. The task ends when the batcher is dropped.
    pub fn start<F, Fut>(execute: F) -> ReadBatcher
    where
        F: Fn(Lane, Vec<usize>, redis::Pipeline) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ReadResult> + Send + 'static,
    {
        let (queue, jobs) = mpsc::unbounded_channel();
        let outstanding = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(jobs, execute, outstanding.clone()));
        ReadBatcher { queue, outstanding }
    }

    pub async fn read(&self, read: Read) -> ReadReplies {
        let (reply, answer) = oneshot::channel();
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        if self.queue.send((read, reply)).is_err() {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::Unavailable);
        }
        answer.await.map_err(|_| StoreError::Unavailable)?
    }

    /// Whether no read is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.outstanding.load(Ordering::Acquire) == 0
    }

    /// Sends `read` from the caller's own task, through `execute`, if no
    /// other read is queued or in flight (there is then nothing to batch
    /// it with, and the hand-offs to the batching task and back are all
    /// a lone read would gain from it); `None` otherwise, and the read
    /// goes through [`ReadBatcher::read`].
    pub async fn read_alone<Fut>(
        &self,
        read: &Read,
        execute: impl FnOnce(Lane, Vec<usize>, redis::Pipeline) -> Fut,
    ) -> Option<ReadReplies>
    where
        Fut: Future<Output = ReadResult>,
    {
        if self
            .outstanding
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        let _answered = Answered(&self.outstanding);
        let plan = Plan::new([read]);
        let replies = execute(read.lane.clone(), vec![read.group], plan.pipeline).await;
        plan.slots.first().map(|slots| replies_of(slots, &replies))
    }
}

/// Counts a read sent alone as answered when its future ends, answered
/// or dropped.
struct Answered<'a>(&'a AtomicUsize);

impl Drop for Answered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn run<F, Fut>(mut jobs: mpsc::UnboundedReceiver<Job>, execute: F, outstanding: Arc<AtomicUsize>)
where
    F: Fn(Lane, Vec<usize>, redis::Pipeline) -> Fut,
    Fut: Future<Output = ReadResult>,
{
    let mut in_flight = FuturesUnordered::new();
    let mut reads_in_flight = 0;
    let mut batch = Vec::new();
    loop {
        let room = in_flight.is_empty() || (in_flight.len() < MAX_IN_FLIGHT && reads_in_flight < LIGHT_LOAD_READS);
        tokio::select! {
            // Answers first: a batch done makes room for the next.
            biased;
            Some(answered) = in_flight.next(), if !in_flight.is_empty() => {
                reads_in_flight -= answered;
                outstanding.fetch_sub(answered, Ordering::AcqRel);
            }
            taken = jobs.recv_many(&mut batch, MAX_BATCH), if room => {
                if taken == 0 {
                    break;
                }
                reads_in_flight += taken;
                // Taken, not copied: the next batch grows from empty, as
                // small as a lone read at light load.
                in_flight.push(send(std::mem::take(&mut batch), &execute));
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Sends one batch, one pipeline per lane, and answers its reads; returns
/// how many it answered.
async fn send<F, Fut>(mut batch: Vec<Job>, execute: &F) -> usize
where
    F: Fn(Lane, Vec<usize>, redis::Pipeline) -> Fut,
    Fut: Future<Output = ReadResult>,
{
    let reads = batch.len();
    let first = &batch[0].0;
    if batch
        .iter()
        .all(|(read, _)| read.lane == first.lane && read.group == first.group)
    {
        // One node, or one bucket: the common case, sent as it is.
        let (lane, group) = (first.lane.clone(), first.group);
        let plan = Plan::new(batch.iter().map(|(read, _)| read));
        let replies = execute(lane, vec![group], plan.pipeline).await;
        answer(batch.drain(..), plan.slots, replies);
        return reads;
    }
    let mut lanes: HashMap<Lane, Vec<Job>> = HashMap::new();
    for job in batch.drain(..) {
        lanes.entry(job.0.lane.clone()).or_default().push(job);
    }
    let sends = lanes.into_iter().map(|(lane, jobs)| {
        let plan = Plan::new(jobs.iter().map(|(read, _)| read));
        let mut groups: Vec<usize> = jobs.iter().map(|(read, _)| read.group).collect();
        groups.sort_unstable();
        groups.dedup();
        let replies = execute(lane, groups, plan.pipeline);
        async move { answer(jobs, plan.slots, replies.await) }
    });
    futures_util::future::join_all(sends).await;
    reads
}

/// Hands each read of one pipeline the replies it needs.
fn answer(jobs: impl IntoIterator<Item = Job>, slots: Vec<Vec<Slot>>, replies: ReadResult) {
    for ((_, reply), slots) in jobs.into_iter().zip(slots) {
        // The requester may have gone (client disconnected): nothing to do.
        let _ = reply.send(replies_of(&slots, &replies));
    }
}

/// The replies one read needs, at its `slots` of the pipeline's.
fn replies_of(slots: &[Slot], replies: &ReadResult) -> ReadReplies {
    match replies {
        Ok(values) => slots
            .iter()
            .map(|slot| {
                values.get(slot.reply).map(|value| Reply {
                    value: value.clone(),
                    ordinal: slot.ordinal,
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| StoreError::Backend("fewer replies than commands".into())),
        Err(e) => Err(e.clone()),
    }
}

/// Where a read finds one of its replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    reply: usize,
    ordinal: u32,
}

/// One command per distinct read (and one script call per limit cell) in
/// a batch, and for each read the replies it needs.
struct Plan {
    pipeline: redis::Pipeline,
    slots: Vec<Vec<Slot>>,
}

impl Plan {
    fn new<'a>(reads: impl IntoIterator<Item = &'a Read, IntoIter: Clone>) -> Plan {
        let reads = reads.into_iter();
        // First which replies each read needs, counting the requests of
        // each limit cell; then the pipeline, now that the counts are known.
        // Sized for every command distinct: grown from empty, they
        // reallocated (and rehashed) as each batch filled them.
        let commands = reads.clone().map(|read| read.commands.len()).sum();
        let mut planned: Vec<(&Command, u32)> = Vec::with_capacity(commands);
        let mut places: HashMap<&Command, usize> = HashMap::with_capacity(commands);
        let mut cells: HashMap<&str, usize> = HashMap::new();
        let slots = reads
            .map(|read| {
                read.commands
                    .iter()
                    .map(|command| match command {
                        Command::Limit { key, .. } => {
                            let reply = *cells.entry(key).or_insert_with(|| {
                                planned.push((command, 0));
                                planned.len() - 1
                            });
                            let ordinal = planned[reply].1;
                            planned[reply].1 += 1;
                            Slot { reply, ordinal }
                        }
                        read => {
                            let reply = *places.entry(read).or_insert_with(|| {
                                planned.push((read, 0));
                                planned.len() - 1
                            });
                            Slot { reply, ordinal: 0 }
                        }
                    })
                    .collect()
            })
            .collect();
        let mut pipeline = redis::Pipeline::with_capacity(planned.len());
        for (command, count) in planned {
            let cmd = match command {
                Command::Get(key) => sized("GET", 1, key.len()).arg(key).take(),
                Command::Stamp(key) => sized("GETRANGE", 3, key.len() + 2 * NUMBER_BYTES)
                    .arg(key)
                    .arg(0)
                    .arg(STAMP_LEN - 1)
                    .take(),
                Command::Score(key, member) => sized("ZSCORE", 2, key.len() + member.len())
                    .arg(&**key)
                    .arg(member)
                    .take(),
                Command::Field(key, field) => sized("HGET", 2, key.len() + field.len()).arg(&**key).arg(field).take(),
                Command::Limit { key, cell } => sized("EVAL", 6, LIMIT_SCRIPT.len() + key.len() + 4 * NUMBER_BYTES)
                    .arg(LIMIT_SCRIPT)
                    .arg(1)
                    .arg(key)
                    .arg(cell.interval_us)
                    .arg(cell.burst)
                    .arg(count)
                    .take(),
            };
            pipeline.add_command(cmd);
        }
        Plan { pipeline, slots }
    }
}

/// Room for one number argument: a u64's 20 digits.
const NUMBER_BYTES: usize = 20;

/// The command `name`, with room for `args` more arguments of `bytes` in
/// all: every batch builds its commands anew, and one grown from empty
/// reallocated its buffers once or twice per argument.
fn sized(name: &str, args: usize, bytes: usize) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(1 + args, name.len() + bytes);
    cmd.arg(name);
    cmd
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[derive(Clone, Copy)]
    enum Part {
        Value,
        Stamp,
    }

    fn read(part: Part, entry_key: &str, generation_keys: &[&str]) -> Read {
        let entry = match part {
            Part::Value => Command::Get(entry_key.into()),
            Part::Stamp => Command::Stamp(entry_key.into()),
        };
        let generations = generation_keys.iter().map(|k| Command::Get(k.to_string()));
        Read {
            lane: Lane::Single,
            group: 0,
            commands: std::iter::once(entry).chain(generations).collect(),
        }
    }

    fn values(replies: Vec<Reply>) -> Vec<Option<Bytes>> {
        replies.into_iter().map(|r| r.value).collect()
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
        let plan = Plan::new(batch.iter().map(|(read, _)| read));
        // GET e1, GET g1, GETRANGE e1, GET g2: a stamp and a value of one
        // key are different commands; a key read as an entry or as a
        // generation is the same one.
        assert_eq!(plan.pipeline.len(), 4);
        let replies: Vec<Vec<usize>> = plan
            .slots
            .iter()
            .map(|slots| slots.iter().map(|s| s.reply).collect())
            .collect();
        assert_eq!(replies, vec![vec![0, 1], vec![0, 1], vec![2, 1, 3], vec![3]]);
    }

    #[test]
    fn requests_counted_in_one_cell_share_one_script_call_each_with_its_place() {
        let cell = Cell {
            interval_us: 1000,
            burst: 5,
        };
        let limit = |key: &str| Command::Limit { key: key.into(), cell };
        let batch: Vec<Job> = [
            vec![Command::Get("e".into()), limit("c1")],
            vec![Command::Get("e".into()), limit("c1"), limit("c2")],
            vec![limit("c1")],
        ]
        .into_iter()
        .map(|commands| {
            let read = Read {
                lane: Lane::Single,
                group: 0,
                commands,
            };
            (read, oneshot::channel().0)
        })
        .collect();
        let plan = Plan::new(batch.iter().map(|(read, _)| read));
        // GET e, EVAL c1 (3 requests), EVAL c2 (1).
        assert_eq!(plan.pipeline.len(), 3);
        let c1_count = plan
            .pipeline
            .cmd_iter()
            .nth(1)
            .unwrap()
            .args_iter()
            .last()
            .map(|a| format!("{a:?}"));
        assert_eq!(c1_count, Some(format!("{:?}", redis::Arg::Simple(b"3".as_slice()))));
        let ordinals: Vec<Vec<(usize, u32)>> = plan
            .slots
            .iter()
            .map(|slots| slots.iter().map(|s| (s.reply, s.ordinal)).collect())
            .collect();
        assert_eq!(
            ordinals,
            vec![vec![(0, 0), (1, 0)], vec![(0, 0), (1, 1), (2, 0)], vec![(1, 2)]]
        );
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
        let values = values(batcher.read(read(Part::Value, "e", &["g1", "g2"])).await.unwrap());
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
                    let values = values(
                        batcher
                            .read(read(Part::Value, &format!("e{}", i % 3), &["g"]))
                            .await
                            .unwrap(),
                    );
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
                    (i, values(batcher.read(r).await.unwrap()))
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

    #[tokio::test(start_paused = true)]
    async fn a_read_goes_alone_only_while_no_other_is_queued_or_in_flight() {
        let (batcher, mut sends, permits) = gated_batcher();
        let alone = |i: usize| {
            let batcher = batcher.clone();
            async move {
                let own = read(Part::Value, &format!("a{i}"), &["g"]);
                batcher.read_alone(&own, numbering).await
            }
        };
        let replies = alone(0).await.expect("nothing outstanding: sent alone");
        assert_eq!(values(replies.unwrap()), vec![Some("0".into()), Some("1".into())]);

        let queued = spawn_read(&batcher, 1);
        assert_eq!(next_send(&mut sends).await, Some(1));
        assert!(!batcher.is_idle());
        assert!(alone(2).await.is_none(), "sent alone beside a batch in flight");
        permits.add_permits(1);
        assert_eq!(values(queued.await.unwrap().unwrap()), vec![None]);
        // Counted down once its batch is answered (paused time moves on
        // only once the batcher is idle).
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(batcher.is_idle());
        assert!(alone(3).await.is_some(), "the batcher's answered read still counted");
    }

    /// A batcher whose pipelines each report their length when sent, then
    /// wait for a permit to answer; the reports, and the permits.
    fn gated_batcher() -> (
        Arc<ReadBatcher>,
        mpsc::UnboundedReceiver<usize>,
        Arc<tokio::sync::Semaphore>,
    ) {
        let (sent, sends) = mpsc::unbounded_channel();
        let permits = Arc::new(tokio::sync::Semaphore::new(0));
        let gate = permits.clone();
        let batcher = ReadBatcher::start(move |_, _, pipeline: redis::Pipeline| {
            let _ = sent.send(pipeline.len());
            let gate = gate.clone();
            async move {
                gate.acquire().await.expect("gate open").forget();
                Ok(vec![None; pipeline.len()])
            }
        });
        (Arc::new(batcher), sends, permits)
    }

    /// The next pipeline's report; `None` if none is sent (paused time
    /// runs the timeout out once every task is idle).
    async fn next_send(sends: &mut mpsc::UnboundedReceiver<usize>) -> Option<usize> {
        tokio::time::timeout(std::time::Duration::from_secs(5), sends.recv())
            .await
            .ok()
            .flatten()
    }

    fn spawn_read(batcher: &Arc<ReadBatcher>, i: usize) -> tokio::task::JoinHandle<ReadReplies> {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.read(read(Part::Value, &format!("e{i}"), &[])).await })
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_batch_is_sent_while_the_first_awaits_its_answer_but_not_a_third() {
        let (batcher, mut sends, permits) = gated_batcher();
        let mut reads = Vec::new();
        for i in 0..3 {
            reads.push(spawn_read(&batcher, i));
            if i < 2 {
                assert!(
                    next_send(&mut sends).await.is_some(),
                    "batch {i} was not sent with {i} unanswered"
                );
            }
        }
        // Paused time moves on only once every task is idle: by then the
        // batcher has sent all it was going to.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(sends.try_recv().is_err(), "a third batch left with two unanswered");
        permits.add_permits(1);
        next_send(&mut sends)
            .await
            .expect("the third batch is sent once one is answered");
        permits.add_permits(2);
        for r in reads {
            assert_eq!(values(r.await.unwrap().unwrap()), vec![None]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn under_load_the_next_batch_waits_for_the_one_in_flight() {
        let (batcher, mut sends, permits) = gated_batcher();
        // Queued before the batcher runs: one batch of LIGHT_LOAD_READS.
        let mut reads: Vec<_> = (0..LIGHT_LOAD_READS).map(|i| spawn_read(&batcher, i)).collect();
        assert_eq!(
            next_send(&mut sends).await,
            Some(LIGHT_LOAD_READS),
            "the queued reads left as one batch"
        );
        reads.push(spawn_read(&batcher, LIGHT_LOAD_READS));
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(sends.try_recv().is_err(), "a second batch left beside a full one");
        permits.add_permits(1);
        assert_eq!(
            next_send(&mut sends).await,
            Some(1),
            "the next read left once the batch was answered"
        );
        permits.add_permits(1);
        for r in reads {
            assert_eq!(values(r.await.unwrap().unwrap()), vec![None]);
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
