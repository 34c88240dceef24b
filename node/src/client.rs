//! [`KvClient`]: writes through a cluster's gRPC client service, as a remote application
//! would: the tonic client generated in `d-engine-proto`, leader discovery through the
//! cluster service, and retries on `NotLeader` and unavailable nodes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use d_engine_proto::client::raft_client_service_client::RaftClientServiceClient;
use d_engine_proto::client::{client_response, ClientResponse, ClientWriteRequest, WriteCommand};
use d_engine_proto::error::ErrorCode;
use d_engine_proto::server::cluster::cluster_management_service_client::ClusterManagementServiceClient;
use d_engine_proto::server::cluster::MetadataRequest;
use tonic::transport::{Channel, Endpoint};

use crate::ClientError;

/// How long one connection attempt or one call may take (less when the request's deadline
/// is nearer).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause between two rounds of attempts, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// A client of a d-engine cluster's key-value service over gRPC.
///
/// Every write goes to the leader: found by asking any node for the cluster's metadata, and
/// followed when a node answers `NotLeader` with a hint. A write that fails for a reason a
/// retry can fix (no leader yet, leader changed, node down or not ready) is retried with
/// backoff until the request deadline. As with any client of a replicated log, a write whose
/// answer was lost may have been applied once already when it is retried.
#[derive(Debug)]
pub struct KvClient {
    endpoints: Vec<SocketAddr>,
    leader: Option<(SocketAddr, RaftClientServiceClient<Channel>)>,
    client_id: u32,
    deadline: Duration,
}

impl KvClient {
    /// A client of the cluster whose nodes listen on `endpoints` (any subset will do: the
    /// leader is discovered). Connects lazily, on the first request.
    pub fn new(endpoints: impl IntoIterator<Item = SocketAddr>) -> Result<Self, ClientError> {
        let endpoints: Vec<_> = endpoints.into_iter().collect();
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        Ok(Self {
            endpoints,
            leader: None,
            client_id: 1,
            deadline: Duration::from_secs(10),
        })
    }

    /// How long one request is retried before it fails with [`ClientError::Unavailable`]
    /// (10 s by default).
    #[must_use]
    pub fn with_request_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets `key` to `value`.
    pub async fn put(
        &mut self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        self.write(WriteCommand::insert(key, value)).await.map(drop)
    }

    /// Deletes `key` (a watcher sees a Delete even when the key did not exist).
    pub async fn delete(&mut self, key: impl Into<Bytes>) -> Result<(), ClientError> {
        self.write(WriteCommand::delete(key)).await.map(drop)
    }

    /// Sets `key` to `new_value` if its value is `expected` (`None`: if it does not exist).
    /// Returns whether it did; only a successful swap produces a watch event.
    pub async fn compare_and_swap(
        &mut self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        new_value: impl Into<Bytes>,
    ) -> Result<bool, ClientError> {
        self.write(WriteCommand::compare_and_swap(key, expected, new_value))
            .await
    }

    /// The address of the current leader, discovering it if needed.
    pub async fn leader(&mut self) -> Result<SocketAddr, ClientError> {
        let started = Instant::now();
        let until = deadline_after(started, self.deadline);
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.connect_leader(until).await {
                Ok(address) => return Ok(address),
                Err(last) => {
                    backoff = pause(backoff, until).await;
                    if Instant::now() >= until {
                        return Err(ClientError::Unavailable {
                            waited: started.elapsed(),
                            last,
                        });
                    }
                }
            }
        }
    }

    /// Sends `command` to the leader until it is answered or the deadline passes. Returns the
    /// write's `succeeded` flag.
    async fn write(&mut self, command: WriteCommand) -> Result<bool, ClientError> {
        let request = ClientWriteRequest {
            client_id: self.client_id,
            command: Some(command),
        };
        let started = Instant::now();
        let until = deadline_after(started, self.deadline);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let last = match self.write_once(&request, until).await {
                Ok(Answer::Done(succeeded)) => return Ok(succeeded),
                Ok(Answer::Redirect(hint)) => {
                    // Follow the hint at once (within the deadline: two nodes naming each
                    // other must not loop for ever); without one, rediscover after a pause.
                    self.leader = None;
                    if let Some(address) = hint {
                        if self.connect(address, until).await.is_ok() {
                            continue;
                        }
                    }
                    "not the leader".to_string()
                }
                Ok(Answer::Rejected { code, message }) => {
                    return Err(ClientError::Rejected { code, message })
                }
                Err(last) => {
                    self.leader = None;
                    last
                }
            };
            // Checked after the pause, so that no attempt starts with nothing left of the
            // deadline (it would fail at once and hide the last real error).
            backoff = pause(backoff, until).await;
            if Instant::now() >= until {
                return Err(ClientError::Unavailable {
                    waited: started.elapsed(),
                    last,
                });
            }
        }
    }

    async fn write_once(
        &mut self,
        request: &ClientWriteRequest,
        until: Instant,
    ) -> Result<Answer, String> {
        if self.leader.is_none() {
            self.connect_leader(until).await?;
        }
        let budget = attempt_budget(until)?;
        let (_, client) = self.leader.as_mut().expect("connected above");
        let call = client.handle_client_write(request.clone());
        let response = match tokio::time::timeout(budget, call).await {
            Err(_) => return Err("the leader did not answer in time".into()),
            Ok(Err(status)) => return Err(format!("{}: {}", status.code(), status.message())),
            Ok(Ok(response)) => response.into_inner(),
        };
        Ok(Answer::of(response))
    }

    /// Asks each endpoint in turn for the cluster's metadata and connects to the leader it
    /// names, giving up at `until` (each attempt gets what is left of it, at most
    /// [`ATTEMPT_TIMEOUT`]: endpoints that accept connections and never answer must not keep
    /// a request past its deadline).
    async fn connect_leader(&mut self, until: Instant) -> Result<SocketAddr, String> {
        if let Some((address, _)) = &self.leader {
            return Ok(*address);
        }
        let mut last = String::from("no endpoint answered");
        for endpoint in self.endpoints.clone() {
            if Instant::now() >= until {
                break;
            }
            match leader_known_to(endpoint, until).await {
                Ok(Some(address)) => match self.connect(address, until).await {
                    Ok(()) => return Ok(address),
                    Err(e) => last = e,
                },
                Ok(None) => last = format!("{endpoint} knows no leader yet"),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn connect(&mut self, address: SocketAddr, until: Instant) -> Result<(), String> {
        let channel = channel_to(address, until).await?;
        self.leader = Some((address, RaftClientServiceClient::new(channel)));
        Ok(())
    }
}

/// What a node answered to one write.
enum Answer {
    Done(bool),
    /// Not the leader; maybe where the leader is.
    Redirect(Option<SocketAddr>),
    Rejected {
        code: i32,
        message: String,
    },
}

impl Answer {
    fn of(response: ClientResponse) -> Self {
        let code = ErrorCode::try_from(response.error).unwrap_or(ErrorCode::Uncategorized);
        let hint = response.metadata.as_ref();
        match code {
            ErrorCode::Success => Answer::Done(matches!(
                response.success_result,
                Some(client_response::SuccessResult::WriteResult(ref r)) if r.succeeded
            )),
            ErrorCode::NotLeader => Answer::Redirect(
                hint.and_then(|m| m.leader_address.as_deref())
                    .and_then(parse_address),
            ),
            // Leadership in motion or a transient refusal: try again.
            ErrorCode::LeaderChanged
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ClusterUnavailable
            | ErrorCode::ProposeFailed
            | ErrorCode::TermOutdated
            | ErrorCode::RetryRequired
            | ErrorCode::RateLimited
            | ErrorCode::StaleOperation => Answer::Redirect(None),
            other => Answer::Rejected {
                code: response.error,
                message: hint
                    .and_then(|m| m.debug_message.clone())
                    .unwrap_or_else(|| other.as_str_name().to_string()),
            },
        }
    }
}

/// The leader `endpoint` knows of, if any.
async fn leader_known_to(
    endpoint: SocketAddr,
    until: Instant,
) -> Result<Option<SocketAddr>, String> {
    let mut cluster = ClusterManagementServiceClient::new(channel_to(endpoint, until).await?);
    let metadata = tokio::time::timeout(
        attempt_budget(until)?,
        cluster.get_cluster_metadata(MetadataRequest {}),
    )
    .await
    .map_err(|_| format!("{endpoint} did not answer in time"))?
    .map_err(|status| format!("{endpoint}: {}: {}", status.code(), status.message()))?
    .into_inner();
    let Some(leader_id) = metadata.current_leader_id else {
        return Ok(None);
    };
    Ok(metadata
        .nodes
        .iter()
        .find(|node| node.id == leader_id)
        .and_then(|node| parse_address(&node.address)))
}

/// The instant `deadline` after `started` (a deadline too far to represent is taken as
/// about a century: never reached).
fn deadline_after(started: Instant, deadline: Duration) -> Instant {
    started
        .checked_add(deadline)
        .or_else(|| started.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(started)
}

/// What one attempt may take: [`ATTEMPT_TIMEOUT`], or less if `until` is nearer; an error
/// once it has passed.
fn attempt_budget(until: Instant) -> Result<Duration, String> {
    match until.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left.min(ATTEMPT_TIMEOUT)),
        _ => Err("the request's deadline passed".into()),
    }
}

/// A connection to `address`, made within the attempt's budget. Calls on it are bounded by
/// [`ATTEMPT_TIMEOUT`] (the channel outlives this request), and each call by its own budget.
async fn channel_to(address: SocketAddr, until: Instant) -> Result<Channel, String> {
    let budget = attempt_budget(until)?;
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(budget)
        .timeout(ATTEMPT_TIMEOUT);
    match tokio::time::timeout(budget, endpoint.connect()).await {
        Err(_) => Err(format!("cannot connect to {address}: no answer in time")),
        Ok(connected) => connected.map_err(|e| format!("cannot connect to {address}: {e}")),
    }
}

/// `ip:port`, with or without an `http://` in front, as d-engine writes node addresses.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let bare = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .unwrap_or(text);
    bare.parse().ok()
}

/// Sleeps `backoff`, or until `until` if that comes first; returns the next backoff.
async fn pause(backoff: Duration, until: Instant) -> Duration {
    tokio::time::sleep_until(
        tokio::time::Instant::from_std(until).min(tokio::time::Instant::now() + backoff),
    )
    .await;
    (backoff * 2).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_parse_with_or_without_a_scheme() {
        let expected: SocketAddr = "127.0.0.1:9081".parse().unwrap();
        for text in [
            "127.0.0.1:9081",
            "http://127.0.0.1:9081",
            "https://127.0.0.1:9081",
        ] {
            assert_eq!(parse_address(text), Some(expected), "{text}");
        }
        for text in ["", "localhost", "http://", "127.0.0.1"] {
            assert_eq!(parse_address(text), None, "{text}");
        }
    }

    #[test]
    fn a_client_needs_at_least_one_endpoint() {
        assert!(matches!(
            KvClient::new(Vec::new()),
            Err(ClientError::NoEndpoints)
        ));
    }
}
