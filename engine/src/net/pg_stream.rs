//! Pipelined PG I/O over one gRPC stream per node pair
//! (`PlacementGroup.Stream`).
//!
//! A unary call costs an HTTP/2 stream: headers both ways, stream state,
//! a write per frame. Under queue depth 32 that was most of a node's CPU
//! (docs/benchmarks.md). Here a caller queues a call and awaits its
//! answer; one task per peer node sends whatever is queued as one message
//! and hands each answer back by its id. The server runs every call of a
//! stream at once and answers in batches as they finish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::proto::placement_group_client::PlacementGroupClient;
use super::proto::{PgAnswer, PgAnswers, PgCall, PgCalls, PgReply};
use crate::replication::NodeId;

/// A batch stops growing past this many payload bytes (one call may be
/// larger alone), keeping messages well under the services' 80 MiB limit.
const BATCH_MAX_BYTES: usize = 4 << 20;
/// Calls one stream runs at once on the server; more wait to be read,
/// which holds the sender back through HTTP/2 flow control.
const STREAM_CALLS_MAX: usize = 1024;
/// Largest message on a stream: one whole 64 MiB I/O plus a batch.
pub const STREAM_MESSAGE_MAX_BYTES: usize = 80 << 20;
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// A write is proposed on the serving node within this time of being
/// sent, or never (`PgCall.deadline_unix_ms`); the server also counts it
/// from when it starts serving the call, so the bound holds while either
/// the clocks or the time from the sender stamping a call to the server
/// starting it (queues on both sides and the wire) stay within
/// `volume::client::CLOCK_SKEW_MAX`.
pub const PROPOSE_WITHIN: Duration = Duration::from_secs(1);

type Pending = (PgCall, oneshot::Sender<PgReply>);

/// The caller's side: one stream per peer node, opened on first use and
/// again after it broke.
#[derive(Clone, Default)]
pub struct PgStreams {
    queues: Arc<Mutex<HashMap<NodeId, mpsc::UnboundedSender<Pending>>>>,
}

impl PgStreams {
    /// Sends one I/O to `node` (over `channel` if a stream must be opened)
    /// and waits for its reply; `None` if the stream broke or the answer
    /// did not come within `timeout` (the caller retries, as after any
    /// lost call). A write is not proposed once `node`'s clock passes
    /// `deadline_unix_ms` (0: no deadline).
    #[allow(clippy::too_many_arguments)]
    pub async fn call(
        &self,
        node: NodeId,
        channel: impl FnOnce() -> Option<Channel>,
        write: bool,
        group: u64,
        payload: Vec<u8>,
        deadline_unix_ms: u64,
        timeout: Duration,
    ) -> Option<PgReply> {
        let (tx, rx) = oneshot::channel();
        let call = PgCall {
            id: 0, // the stream's task numbers its calls
            write,
            group,
            payload,
            deadline_unix_ms,
        };
        {
            let mut queues = self.queues.lock().expect("pg stream queues lock");
            let queue = match queues.get(&node).filter(|q| !q.is_closed()) {
                Some(q) => q.clone(),
                None => {
                    let (q, calls) = mpsc::unbounded_channel();
                    tokio::spawn(run_stream(channel()?, calls));
                    queues.insert(node, q.clone());
                    q
                }
            };
            queue.send((call, tx)).ok()?;
        }
        tokio::time::timeout(timeout, rx).await.ok()?.ok()
    }
}

/// Owns one stream: sends queued calls in batches, routes answers by id.
/// Ends (dropping every waiting caller's sender) when the stream breaks.
async fn run_stream(channel: Channel, mut calls: mpsc::UnboundedReceiver<Pending>) {
    let mut client = PlacementGroupClient::new(channel)
        .max_decoding_message_size(STREAM_MESSAGE_MAX_BYTES)
        .max_encoding_message_size(STREAM_MESSAGE_MAX_BYTES);
    let (outbound, outbound_rx) = mpsc::channel::<PgCalls>(64);
    let opened = tokio::time::timeout(
        OPEN_TIMEOUT,
        client.stream(ReceiverStream::new(outbound_rx)),
    )
    .await;
    let mut answers = match opened {
        Ok(Ok(response)) => response.into_inner(),
        _ => {
            // Nothing went out: the callers may retry elsewhere at once.
            calls.close();
            while let Ok((_, caller)) = calls.try_recv() {
                let _ = caller.send(PgReply {
                    not_leader: true,
                    ..PgReply::default()
                });
            }
            return;
        }
    };
    let mut waiting: HashMap<u64, oneshot::Sender<PgReply>> = HashMap::new();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            first = calls.recv() => {
                let Some(first) = first else { break };
                let queued = take_batch(first, || calls.try_recv().ok(), |(c, _)| c.payload.len());
                let mut sending = Vec::with_capacity(queued.len());
                // A caller that gave up (timed out) has retried elsewhere:
                // sending its call late could land a write after a newer one.
                for (mut call, reply) in queued.into_iter().filter(|(_, r)| !r.is_closed()) {
                    next_id += 1;
                    call.id = next_id;
                    waiting.insert(call.id, reply);
                    sending.push(call);
                }
                if !sending.is_empty() && outbound.send(PgCalls { calls: sending }).await.is_err() {
                    break;
                }
            }
            answered = answers.next() => {
                let Some(Ok(answered)) = answered else { break };
                for answer in answered.answers {
                    if let (Some(reply), Some(caller)) = (answer.reply, waiting.remove(&answer.id)) {
                        let _ = caller.send(reply);
                    }
                }
            }
        }
    }
    // Closed before the waiting callers hear of the break: a call made
    // once they have must open a new stream, not join this dead one
    // (which returning would close only after dropping `waiting`).
    calls.close();
    drop(waiting);
}

/// `first` and whatever `more` has ready, up to [`BATCH_MAX_BYTES`] by
/// `size` (a single item may be larger alone).
fn take_batch<T>(
    first: T,
    mut more: impl FnMut() -> Option<T>,
    size: impl Fn(&T) -> usize,
) -> Vec<T> {
    let mut bytes = size(&first);
    let mut items = vec![first];
    while bytes < BATCH_MAX_BYTES {
        let Some(item) = more() else { break };
        bytes += size(&item);
        items.push(item);
    }
    items
}

/// The server's side of one stream: runs each call through `serve` as it
/// arrives and streams the answers back, batched as they finish.
pub fn serve_stream<F, Fut>(
    mut inbound: Streaming<PgCalls>,
    serve: F,
) -> impl tokio_stream::Stream<Item = Result<PgAnswers, Status>> + Send + 'static
where
    F: Fn(PgCall) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = PgReply> + Send + 'static,
{
    let (answered, answers) = mpsc::unbounded_channel::<PgAnswer>();
    tokio::spawn(async move {
        let running = Arc::new(Semaphore::new(STREAM_CALLS_MAX));
        while let Some(Ok(batch)) = inbound.next().await {
            for call in batch.calls {
                let Ok(permit) = running.clone().acquire_owned().await else {
                    return;
                };
                let id = call.id;
                let reply = serve(call);
                let answered = answered.clone();
                tokio::spawn(async move {
                    let reply = reply.await;
                    let _ = answered.send(PgAnswer {
                        id,
                        reply: Some(reply),
                    });
                    drop(permit);
                });
            }
        }
    });
    AnswerBatches { answers }
}

/// Batches of answers: waits for one, then takes whatever else is ready.
struct AnswerBatches {
    answers: mpsc::UnboundedReceiver<PgAnswer>,
}

impl tokio_stream::Stream for AnswerBatches {
    type Item = Result<PgAnswers, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let Some(first) = std::task::ready!(self.answers.poll_recv(cx)) else {
            return std::task::Poll::Ready(None);
        };
        let answers = take_batch(
            first,
            || self.answers.try_recv().ok(),
            |a| a.reply.as_ref().map_or(0, |r| r.data.len()),
        );
        std::task::Poll::Ready(Some(Ok(PgAnswers { answers })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::proto::placement_group_server::{PlacementGroup, PlacementGroupServer};
    use crate::net::proto::PgReply;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;
    use tonic::{Request, Response};

    /// Answers each call with its group and payload after as many
    /// milliseconds as the payload's first byte says, so that answers
    /// finish out of order; every stream it serves breaks on `breaker`.
    #[derive(Clone, Default)]
    struct Echo {
        streams_opened: Arc<AtomicUsize>,
        breaker: Arc<tokio::sync::Notify>,
    }

    #[tonic::async_trait]
    impl PlacementGroup for Echo {
        type StreamStream =
            std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<PgAnswers, Status>> + Send>>;
        async fn stream(
            &self,
            request: Request<Streaming<PgCalls>>,
        ) -> Result<Response<Self::StreamStream>, Status> {
            self.streams_opened.fetch_add(1, Ordering::SeqCst);
            let answers = serve_stream(request.into_inner(), |call| async move {
                let delay = call.payload.first().copied().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(delay as u64)).await;
                let mut data = call.group.to_le_bytes().to_vec();
                data.extend_from_slice(&call.payload);
                data.push(call.write as u8);
                PgReply {
                    data,
                    ..PgReply::default()
                }
            });
            let (fail, failure) = mpsc::channel(1);
            let breaker = self.breaker.clone();
            tokio::spawn(async move {
                breaker.notified().await;
                let _ = fail.send(Err(Status::unavailable("stream broken"))).await;
            });
            Ok(Response::new(Box::pin(
                answers.merge(ReceiverStream::new(failure)),
            )))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_share_one_stream_get_their_own_answers_and_a_broken_stream_fails_them_and_reopens(
    ) {
        let echo = Echo::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PlacementGroupServer::new(echo.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let streams = PgStreams::default();
        let call = |group: u64, payload: Vec<u8>, write: bool| {
            let streams = streams.clone();
            let channel = channel.clone();
            async move {
                streams
                    .call(
                        7,
                        || Some(channel),
                        write,
                        group,
                        payload,
                        0,
                        Duration::from_secs(5),
                    )
                    .await
            }
        };

        // 300 calls at once, finishing out of order: each gets its answer.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..300u64 {
            let payload = vec![(i * 7 % 20) as u8, i as u8, (i >> 8) as u8];
            let write = i % 3 == 0;
            let answer = call(i, payload.clone(), write);
            tasks.spawn(async move { (i, payload, write, answer.await) });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, payload, write, reply) = done.unwrap();
            let mut expected = i.to_le_bytes().to_vec();
            expected.extend_from_slice(&payload);
            expected.push(write as u8);
            assert_eq!(reply.expect("answered").data, expected, "call {i}");
        }
        assert_eq!(echo.streams_opened.load(Ordering::SeqCst), 1);

        // Calls in flight when the stream breaks fail at once (not after
        // their timeout), and the next call opens a new stream.
        let started = Instant::now();
        let slow: Vec<_> = (0..5)
            .map(|i| tokio::spawn(call(i, vec![250], false)))
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        echo.breaker.notify_waiters();
        for task in slow {
            assert_eq!(task.await.unwrap(), None);
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        let reply = call(9, vec![0, 1], true).await.expect("answered");
        assert_eq!(reply.data, [&9u64.to_le_bytes()[..], &[0, 1, 1]].concat());
        assert_eq!(echo.streams_opened.load(Ordering::SeqCst), 2);
        server.abort();
    }
}
