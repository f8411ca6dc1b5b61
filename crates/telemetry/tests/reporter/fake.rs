//! A fake collector on a real socket: it applies each (incarnation, sequence)
//! once, answers replays as duplicates, records what it saw, and follows a
//! script of answers (failures, lost acknowledgements). Like the real one, it
//! can refuse messages over a size limit (tonic answers `OUT_OF_RANGE`).

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use automation_proto::v1::collector_server::{Collector, CollectorServer};
use automation_proto::v1::{Event, EventBatch, PushResponse};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

/// How the fake answers one push.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// Apply (unless a replay) and acknowledge.
    Ack,
    /// Refuse with this code, applying nothing.
    Fail(Code),
    /// Apply, then answer UNAVAILABLE as if the acknowledgement was lost.
    LoseAck,
}

/// One push as the fake saw it.
#[derive(Debug, Clone)]
pub struct Push {
    pub sequence: u64,
    /// Events in the batch.
    pub events: usize,
    /// The batch's encoded size.
    pub bytes: usize,
    pub authorization: Option<String>,
    /// The batch had been applied before.
    pub replay: bool,
}

#[derive(Default)]
pub struct State {
    /// Answers for the next pushes, then `Ack` for ever.
    pub script: VecDeque<Answer>,
    /// When set, pushes without `authorization: Bearer <token>` are refused.
    pub required_token: Option<String>,
    pub pushes: Vec<Push>,
    /// Applied batches, in the order they were applied.
    pub batches: Vec<EventBatch>,
    applied: HashSet<(u64, u64)>,
}

impl State {
    /// Every applied event, in order.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.batches.iter().flat_map(|batch| &batch.events)
    }
}

struct Service {
    state: Arc<Mutex<State>>,
}

#[tonic::async_trait]
impl Collector for Service {
    async fn push(&self, request: Request<EventBatch>) -> Result<Response<PushResponse>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let batch = request.into_inner();
        let sequence = batch.sequence;
        let mut state = self.state.lock().unwrap();
        let key = (batch.source.as_ref().map_or(0, |s| s.incarnation), sequence);
        let replay = state.applied.contains(&key);
        state.pushes.push(Push {
            sequence,
            events: batch.events.len(),
            bytes: batch.encoded_len(),
            authorization: authorization.clone(),
            replay,
        });
        if let Some(token) = &state.required_token
            && authorization.as_deref() != Some(format!("Bearer {token}").as_str())
        {
            return Err(Status::unauthenticated("bearer token not accepted"));
        }
        let answer = state.script.pop_front().unwrap_or(Answer::Ack);
        if let Answer::Fail(code) = answer {
            return Err(Status::new(code, "scripted failure"));
        }
        let accepted = batch.events.len() as u32;
        if !replay {
            state.applied.insert(key);
            state.batches.push(batch);
        }
        if let Answer::LoseAck = answer {
            return Err(Status::unavailable("acknowledgement lost"));
        }
        Ok(Response::new(PushResponse {
            sequence,
            accepted: if replay { 0 } else { accepted },
            rejected: 0,
            duplicate: replay,
        }))
    }
}

/// A fake collector that can be stopped and started again on the same port.
pub struct FakeCollector {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// The largest message it decodes (tonic's default when `None`).
    max_decoding: Option<usize>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl FakeCollector {
    /// Listening on a free loopback port.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Listening, refusing messages over `max_decoding` bytes as tonic does:
    /// `OUT_OF_RANGE`, before the service sees them.
    pub async fn start_with(max_decoding: Option<usize>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut fake = Self::not_listening(listener.local_addr().unwrap());
        fake.max_decoding = max_decoding;
        fake.serve(listener);
        fake
    }

    /// Not listening yet, on a port that was free a moment ago.
    pub fn reserved() -> Self {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self::not_listening(probe.local_addr().unwrap())
    }

    fn not_listening(addr: SocketAddr) -> Self {
        Self {
            addr,
            state: Arc::default(),
            max_decoding: None,
            running: None,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Starts listening on its port; what it saw before is kept.
    pub async fn listen(&mut self) {
        assert!(self.running.is_none(), "already listening");
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let mut service = CollectorServer::new(Service {
            state: Arc::clone(&self.state),
        });
        if let Some(limit) = self.max_decoding {
            service = service.max_decoding_message_size(limit);
        }
        let task = tokio::spawn(async move {
            // One service, so no router is needed.
            tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(service, TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        self.running = Some((stop, task));
    }

    /// Stops listening and closes its connections.
    pub async fn stop(&mut self) {
        let (stop, task) = self.running.take().expect("not listening");
        let _ = stop.send(());
        let abort = task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}
