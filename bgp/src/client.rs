//! The gobgpd client: announce, withdraw, list what levee originated, and
//! read peer states, over gobgpd's gRPC API.
//!
//! Every call has a deadline, so a hung daemon is an error, not a stall.
//! Withdrawal always names the path: a `DeletePath` with neither a path nor
//! a uuid deletes every locally originated path, and this client cannot
//! send one.

use std::net::SocketAddr;
use std::time::Duration;

use prost::Message;
use tonic::transport::{Channel, Endpoint};

use crate::gobgp::{self, apipb};
use crate::model::{Route, Translation};

type Api = apipb::gobgp_api_client::GobgpApiClient<Channel>;

/// How long one call to gobgpd may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// gobgpd cannot be reached (not running, wrong address, timed out).
    #[error("gobgpd at {addr} is unreachable: {reason}")]
    Unavailable { addr: SocketAddr, reason: String },
    /// gobgpd answered with an error.
    #[error("gobgpd refused {what}: {message}")]
    Refused { what: String, message: String },
}

/// What was sent and what gobgpd answered: the mitigation log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The request exactly as sent (protobuf bytes, hex).
    pub payload: String,
    /// gobgpd's answer: the path's uuid (hex) for an announcement, "ok"
    /// for a withdrawal.
    pub response: String,
}

/// A BGP neighbour of the speaker and its session state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub address: String,
    pub asn: u32,
    /// `established`, `active`, `idle`, … (gobgpd's name, lower case).
    pub state: String,
}

impl Peer {
    pub fn established(&self) -> bool {
        self.state == "established"
    }
}

/// A connection to levee's gobgpd.
#[derive(Debug, Clone)]
pub struct Speaker {
    addr: SocketAddr,
    api: Api,
}

impl Speaker {
    /// Connects to gobgpd's gRPC API at `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Speaker, Error> {
        let unavailable = |reason: String| Error::Unavailable { addr, reason };
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| unavailable(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unavailable(source_chain(&e)))?;
        let mut s = Speaker {
            addr,
            api: Api::new(channel),
        };
        // A gRPC connection is not yet a gobgpd: ask it something.
        s.api
            .get_bgp(apipb::GetBgpRequest {})
            .await
            .map_err(|e| s.status("GetBgp", e))?;
        Ok(s)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs one gRPC call, and once more if it failed before reaching
    /// gobgpd. tonic's channel reconnects in the background and hands a
    /// connection attempt that failed while gobgpd was down to the next
    /// call, even when gobgpd is back by then (seen in CI right after a
    /// restart). Such a request never reached the daemon, so sending it
    /// again is safe; every request levee makes is idempotent besides.
    async fn call<Q, R, F, Fut>(&self, what: &str, req: Q, f: F) -> Result<R, Error>
    where
        Q: Clone,
        F: Fn(Api, Q) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let r = match f(self.api.clone(), req.clone()).await {
            Err(e) if not_sent(&e) => f(self.api.clone(), req).await,
            r => r,
        };
        r.map(tonic::Response::into_inner)
            .map_err(|e| self.status(what, e))
    }

    fn status(&self, what: &str, e: tonic::Status) -> Error {
        match e.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                Error::Unavailable {
                    addr: self.addr,
                    reason: format!("{what}: {}", e.message()),
                }
            }
            _ if not_sent(&e) => Error::Unavailable {
                addr: self.addr,
                reason: format!("{what}: {}", source_chain(&e)),
            },
            _ => Error::Refused {
                what: what.to_owned(),
                message: e.message().to_owned(),
            },
        }
    }

    /// Announces `route` (replacing any path with the same NLRI).
    pub async fn announce(&mut self, route: &Route) -> Result<Sent, Error> {
        let req = apipb::AddPathRequest {
            table_type: apipb::TableType::Global as i32,
            vrf_id: String::new(),
            path: Some(gobgp::path(route)),
        };
        let payload = hex::encode(req.encode_to_vec());
        let r = self
            .call(
                &format!("announcing {route}"),
                req,
                |mut api, req| async move { api.add_path(req).await },
            )
            .await?;
        Ok(Sent {
            payload,
            response: hex::encode(r.uuid),
        })
    }

    /// Withdraws `route`, named by its path (never by an empty request).
    pub async fn withdraw(&mut self, route: &Route) -> Result<Sent, Error> {
        let path = gobgp::path(route);
        let req = apipb::DeletePathRequest {
            table_type: apipb::TableType::Global as i32,
            vrf_id: String::new(),
            family: path.family,
            path: Some(path),
            uuid: Vec::new(),
        };
        let payload = hex::encode(req.encode_to_vec());
        self.call(
            &format!("withdrawing {route}"),
            req,
            |mut api, req| async move { api.delete_path(req).await },
        )
        .await?;
        Ok(Sent {
            payload,
            response: "ok".to_owned(),
        })
    }

    /// The routes in gobgpd's global RIB that were put there over the API,
    /// in levee's families, read back as levee routes. Paths levee cannot
    /// read (another tool's) are counted in the second value, not returned.
    pub async fn local_routes(&mut self) -> Result<(Vec<Route>, usize), Error> {
        let mut out = Vec::new();
        let mut foreign = 0;
        for family in gobgp::families() {
            let req = apipb::ListPathRequest {
                table_type: apipb::TableType::Global as i32,
                family: Some(family),
                ..Default::default()
            };
            let mut stream = self
                .call("ListPath", req, |mut api, req| async move {
                    api.list_path(req).await
                })
                .await?;
            loop {
                let msg = stream
                    .message()
                    .await
                    .map_err(|e| self.status("ListPath", e))?;
                let Some(msg) = msg else { break };
                let Some(d) = msg.destination else { continue };
                for p in d.paths.iter().filter(|p| gobgp::is_local(p)) {
                    match gobgp::route(p) {
                        Some(r) => out.push(r),
                        None => foreign += 1,
                    }
                }
            }
        }
        Ok((out, foreign))
    }

    /// Installs levee's export policy: for each translation, routes with
    /// its `from` community leave toward its neighbour with `to` instead.
    /// gobgpd forgets policies added over the API when it restarts, so this
    /// is applied on every connection; it first removes what an earlier
    /// call installed (the names all start with `levee-`), so it can be
    /// called again and again. An empty list only removes.
    pub async fn set_translations(&mut self, ts: &[Translation]) -> Result<(), Error> {
        use apipb::{
            community_action, match_set, CommunityAction, DefinedSet, DefinedType, MatchSet,
            Policy, PolicyAssignment, PolicyDirection, RouteAction, Statement,
        };
        const POLICY: &str = "levee-translate";
        let assignment = |policies: Vec<Policy>| PolicyAssignment {
            name: "global".to_owned(),
            direction: PolicyDirection::Export as i32,
            policies,
            default_action: RouteAction::Accept as i32,
        };
        let named = || Policy {
            name: POLICY.to_owned(),
            statements: Vec::new(),
        };
        // Remove the old (errors mean "was not there").
        let _ = self
            .api
            .delete_policy_assignment(apipb::DeletePolicyAssignmentRequest {
                assignment: Some(assignment(vec![named()])),
                all: false,
            })
            .await;
        let _ = self
            .api
            .delete_policy(apipb::DeletePolicyRequest {
                policy: Some(named()),
                preserve_statements: false,
                // (without `all`, gobgpd only removes the statements named)
                all: true,
            })
            .await;
        // gobgpd keeps a deleted policy's statements: remove them too, or
        // the sets they name cannot go.
        let mut stream = self
            .api
            .list_statement(apipb::ListStatementRequest {
                name: String::new(),
            })
            .await
            .map_err(|e| self.status("ListStatement", e))?
            .into_inner();
        let mut old_statements = Vec::new();
        while let Ok(Some(m)) = stream.message().await {
            if let Some(st) = m.statement {
                if st.name.starts_with("levee-") {
                    old_statements.push(st.name);
                }
            }
        }
        for name in old_statements {
            self.api
                .delete_statement(apipb::DeleteStatementRequest {
                    statement: Some(Statement {
                        name,
                        ..Default::default()
                    }),
                    all: true,
                })
                .await
                .map_err(|e| self.status("DeleteStatement", e))?;
        }
        let mut sets: Vec<(DefinedType, String)> = Vec::new();
        for kind in [DefinedType::Neighbor, DefinedType::Community] {
            let mut stream = self
                .api
                .list_defined_set(apipb::ListDefinedSetRequest {
                    defined_type: kind as i32,
                    name: String::new(),
                })
                .await
                .map_err(|e| self.status("ListDefinedSet", e))?
                .into_inner();
            while let Ok(Some(m)) = stream.message().await {
                if let Some(d) = m.defined_set.filter(|d| d.name.starts_with("levee-")) {
                    sets.push((kind, d.name));
                }
            }
        }
        for (t, name) in sets {
            self.api
                .delete_defined_set(apipb::DeleteDefinedSetRequest {
                    defined_set: Some(DefinedSet {
                        defined_type: t as i32,
                        name,
                        ..Default::default()
                    }),
                    all: true,
                })
                .await
                .map_err(|e| self.status("DeleteDefinedSet", e))?;
        }
        if ts.is_empty() {
            return Ok(());
        }
        let mut statements = Vec::new();
        for (i, t) in ts.iter().enumerate() {
            let (nset, cset) = (format!("levee-up-{i}"), format!("levee-from-{i}"));
            let host = match t.neighbor {
                std::net::IpAddr::V4(a) => format!("{a}/32"),
                std::net::IpAddr::V6(a) => format!("{a}/128"),
            };
            for (kind, name, list) in [
                (DefinedType::Neighbor, &nset, vec![host]),
                (DefinedType::Community, &cset, vec![format!("^{}$", t.from)]),
            ] {
                self.api
                    .add_defined_set(apipb::AddDefinedSetRequest {
                        defined_set: Some(DefinedSet {
                            defined_type: kind as i32,
                            name: name.clone(),
                            list,
                            prefixes: Vec::new(),
                        }),
                    })
                    .await
                    .map_err(|e| self.status("AddDefinedSet", e))?;
            }
            statements.push(Statement {
                name: format!("levee-translate-{i}"),
                conditions: Some(apipb::Conditions {
                    neighbor_set: Some(MatchSet {
                        r#type: match_set::Type::Any as i32,
                        name: nset,
                    }),
                    community_set: Some(MatchSet {
                        r#type: match_set::Type::Any as i32,
                        name: cset,
                    }),
                    ..Default::default()
                }),
                actions: Some(apipb::Actions {
                    route_action: RouteAction::None as i32,
                    community: Some(CommunityAction {
                        r#type: community_action::Type::Replace as i32,
                        communities: t.to.iter().map(ToString::to_string).collect(),
                    }),
                    ..Default::default()
                }),
            });
        }
        let policy = Policy {
            name: POLICY.to_owned(),
            statements,
        };
        self.api
            .add_policy(apipb::AddPolicyRequest {
                policy: Some(policy),
                refer_existing_statements: false,
            })
            .await
            .map_err(|e| self.status("AddPolicy", e))?;
        self.api
            .add_policy_assignment(apipb::AddPolicyAssignmentRequest {
                assignment: Some(assignment(vec![named()])),
            })
            .await
            .map_err(|e| self.status("AddPolicyAssignment", e))?;
        Ok(())
    }

    /// Resolves when this connection's gobgpd goes away: a stream of its
    /// peer events is held open, and it ends when the daemon stops or
    /// restarts (which also forgets every API route). Quick restarts that
    /// a reconnecting channel would hide are seen this way.
    pub async fn gone(&self) -> String {
        let mut api = self.api.clone();
        let req = apipb::WatchEventRequest {
            peer: Some(apipb::watch_event_request::Peer {}),
            table: None,
        };
        // Held open for as long as the daemon lives: no deadline.
        let mut request = tonic::Request::new(req);
        request.set_timeout(Duration::from_secs(365 * 86_400));
        let mut stream = match api.watch_event(request).await {
            Ok(r) => r.into_inner(),
            Err(e) => return format!("watching gobgpd: {}", e.message()),
        };
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return "gobgpd closed its event stream".to_owned(),
                Err(e) => return format!("gobgpd's event stream broke: {}", e.message()),
            }
        }
    }

    /// The speaker's neighbours and their session states.
    pub async fn peers(&mut self) -> Result<Vec<Peer>, Error> {
        let req = apipb::ListPeerRequest::default();
        let mut stream = self
            .call("ListPeer", req, |mut api, req| async move {
                api.list_peer(req).await
            })
            .await?;
        let mut out = Vec::new();
        while let Some(m) = stream
            .message()
            .await
            .map_err(|e| self.status("ListPeer", e))?
        {
            let Some(p) = m.peer else { continue };
            let conf = p.conf.unwrap_or_default();
            let state = p
                .state
                .map(|s| {
                    apipb::peer_state::SessionState::try_from(s.session_state)
                        .map(|x| x.as_str_name().to_ascii_lowercase())
                        .unwrap_or_else(|_| "unknown".to_owned())
                })
                .unwrap_or_else(|| "unknown".to_owned());
            out.push(Peer {
                address: conf.neighbor_address,
                asn: conf.peer_asn,
                state,
            });
        }
        Ok(out)
    }
}

/// Whether a call failed in the transport (no connection, connection
/// refused or reset) rather than with an answer from gobgpd.
fn not_sent(e: &tonic::Status) -> bool {
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        if c.is::<tonic::transport::Error>() || c.is::<std::io::Error>() {
            return true;
        }
        cur = c.source();
    }
    false
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}
