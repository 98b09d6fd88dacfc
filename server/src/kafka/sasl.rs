//! SASL on a Kafka connection, as Kafka's `SaslServerAuthenticator` runs it: before a client has
//! authenticated, only ApiVersions and SaslHandshake are served; SaslHandshake v1 is followed by
//! SaslAuthenticate requests, v0 by raw length-prefixed tokens. A failure is answered with
//! `SASL_AUTHENTICATION_FAILED` (where the protocol can carry it) and the connection is closed;
//! any other request before authentication closes it too.

use bytes::{Buf, Bytes, BytesMut};
use eddy_security::{Access, Mechanism, Principal, ScramServer, SecurityError, Step};
use kafka_protocol::messages::{
    ApiKey, RequestHeader, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};

use super::code;

/// The largest frame accepted before authentication (Kafka's `sasl.server.max.receive.size`).
pub(super) const MAX_UNAUTHENTICATED_FRAME: usize = 512 * 1024;

/// What the connection does with a frame that arrived before authentication.
pub(super) enum Action {
    /// Serve it as any request (ApiVersions).
    Serve(Bytes),
    /// Send this framed response body and wait for the next frame.
    Reply(BytesMut),
    /// Send this raw token (SaslHandshake v0's exchange) and wait for the next frame.
    Token(Vec<u8>),
    /// Send this response, then close the connection.
    ReplyAndClose(BytesMut),
    /// Close the connection at once, for this reason.
    Close(String),
}

/// What a connection does after a frame went through its SASL exchange.
pub(super) enum Next {
    /// Serve this frame as a request.
    Serve(Bytes),
    /// Read the next frame.
    Read,
    /// The exchange closed the connection.
    Close,
}

/// Runs `frame` through the connection's SASL exchange while one is under way, answering on
/// `socket`; once the client has authenticated, `principal` is its user and `sasl` is `None`,
/// and every frame is served.
pub(super) async fn exchange<S: AsyncWrite + Unpin>(
    socket: &mut S,
    sasl: &mut Option<SaslSession>,
    principal: &mut Principal,
    frame: Bytes,
) -> anyhow::Result<Next> {
    let Some(mut session) = sasl.take() else {
        return Ok(Next::Serve(frame));
    };
    // PLAIN derives a key from the password (PBKDF2, milliseconds): off the async threads, as
    // every step is, there being a handful per connection.
    let (session, (action, authenticated)) = tokio::task::spawn_blocking(move || {
        let outcome = session.handle(frame);
        (session, outcome)
    })
    .await?;
    match authenticated {
        Some(user) => *principal = user,
        None => *sasl = Some(session),
    }
    match action {
        Action::Serve(frame) => Ok(Next::Serve(frame)),
        Action::Reply(out) => {
            super::write_frame(socket, &out).await?;
            Ok(Next::Read)
        }
        Action::Token(token) => {
            super::write_frame(socket, &token).await?;
            Ok(Next::Read)
        }
        Action::ReplyAndClose(out) => {
            super::write_frame(socket, &out).await?;
            socket.shutdown().await?;
            Ok(Next::Close)
        }
        Action::Close(why) => anyhow::bail!(why),
    }
}

enum Chosen {
    Plain,
    Scram(Box<ScramServer>),
}

enum Stage {
    /// Waiting for SaslHandshake.
    Handshake,
    /// Mechanism chosen; `raw` after a v0 handshake.
    Authenticating { chosen: Chosen, raw: bool },
}

/// One connection's SASL exchange.
pub(super) struct SaslSession {
    access: Access,
    mechanisms: Vec<String>,
    stage: Stage,
}

impl SaslSession {
    /// An exchange against `access`'s users, offering `mechanisms`.
    pub(super) fn new(access: Access, mechanisms: Vec<String>) -> Self {
        SaslSession {
            access,
            mechanisms,
            stage: Stage::Handshake,
        }
    }

    /// Handles a frame; `Ok(principal)` in the second place once the client has authenticated.
    pub(super) fn handle(&mut self, frame: Bytes) -> (Action, Option<Principal>) {
        if let Stage::Authenticating { raw: true, .. } = self.stage {
            return self.raw_token(&frame);
        }
        match self.request(frame) {
            Ok(outcome) => outcome,
            Err(e) => (Action::Close(e.to_string()), None),
        }
    }

    fn request(&mut self, frame: Bytes) -> anyhow::Result<(Action, Option<Principal>)> {
        if frame.len() < 8 {
            anyhow::bail!(
                "a request of {} bytes is shorter than its header",
                frame.len()
            );
        }
        let mut body = frame.clone();
        let key = body.clone().get_i16();
        let version = body.clone().slice(2..).get_i16();
        let key = ApiKey::try_from(key).map_err(|_| anyhow::anyhow!("unknown API key {key}"))?;
        match key {
            ApiKey::ApiVersions => return Ok((Action::Serve(frame), None)),
            ApiKey::SaslHandshake if (0..=1).contains(&version) => {}
            ApiKey::SaslAuthenticate if (0..=2).contains(&version) => {}
            other => anyhow::bail!(
                "unexpected Kafka request of type {other:?} during SASL authentication"
            ),
        }
        let header = RequestHeader::decode(&mut body, key.request_header_version(version))?;
        let id = header.correlation_id;
        if key == ApiKey::SaslHandshake {
            let request = SaslHandshakeRequest::decode(&mut body, version)?;
            return Ok(self.handshake(id, version, &request));
        }
        let request = SaslAuthenticateRequest::decode(&mut body, version)?;
        let Stage::Authenticating { chosen, raw: false } = &mut self.stage else {
            anyhow::bail!("SaslAuthenticate before SaslHandshake v1");
        };
        let reply = |response: SaslAuthenticateResponse| {
            super::encode_response(id, ApiKey::SaslAuthenticate, version, &response)
        };
        match step(&self.access, chosen, &request.auth_bytes) {
            Ok((token, principal)) => {
                let response =
                    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token));
                Ok((Action::Reply(reply(response)?), principal))
            }
            Err(e) => {
                log_failure(chosen, &request.auth_bytes, &e);
                let response = SaslAuthenticateResponse::default()
                    .with_error_code(code::SASL_AUTHENTICATION_FAILED)
                    .with_error_message(Some(StrBytes::from_string(e.to_string())));
                Ok((Action::ReplyAndClose(reply(response)?), None))
            }
        }
    }

    fn handshake(
        &mut self,
        id: i32,
        version: i16,
        request: &SaslHandshakeRequest,
    ) -> (Action, Option<Principal>) {
        let asked = request.mechanism.as_str();
        let offered = self
            .mechanisms
            .iter()
            .any(|m| m.eq_ignore_ascii_case(asked));
        let chosen = match (offered, Mechanism::from_name(asked)) {
            (true, Some(m)) => Some(Chosen::Scram(Box::new(ScramServer::new(m)))),
            (true, None) if asked.eq_ignore_ascii_case("PLAIN") => Some(Chosen::Plain),
            _ => None,
        };
        let mut response = SaslHandshakeResponse::default().with_mechanisms(
            self.mechanisms
                .iter()
                .map(|m| StrBytes::from_string(m.clone()))
                .collect(),
        );
        let Some(chosen) = chosen else {
            response.error_code = code::UNSUPPORTED_SASL_MECHANISM;
            return match super::encode_response(id, ApiKey::SaslHandshake, version, &response) {
                Ok(out) => (Action::ReplyAndClose(out), None),
                Err(e) => (Action::Close(e.to_string()), None),
            };
        };
        if !matches!(self.stage, Stage::Handshake) {
            return (
                Action::Close("a second SaslHandshake on one connection".into()),
                None,
            );
        }
        self.stage = Stage::Authenticating {
            chosen,
            raw: version == 0,
        };
        match super::encode_response(id, ApiKey::SaslHandshake, version, &response) {
            Ok(out) => (Action::Reply(out), None),
            Err(e) => (Action::Close(e.to_string()), None),
        }
    }

    fn raw_token(&mut self, token: &[u8]) -> (Action, Option<Principal>) {
        let Stage::Authenticating { chosen, .. } = &mut self.stage else {
            return (
                Action::Close("a SASL token before the handshake".into()),
                None,
            );
        };
        match step(&self.access, chosen, token) {
            Ok((reply, principal)) => (Action::Token(reply), principal),
            Err(e) => {
                log_failure(chosen, token, &e);
                (Action::Close(e.to_string()), None)
            }
        }
    }
}

/// The answer to SaslAuthenticate outside a SASL listener's exchange.
pub(super) fn outside_a_session() -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(code::ILLEGAL_SASL_STATE)
        .with_error_message(Some(StrBytes::from_static_str(
            "SaslAuthenticate is only served during SASL authentication",
        )))
}

/// Logs a failed authentication with the principal the client claimed (never its password).
fn log_failure(chosen: &Chosen, token: &[u8], error: &SecurityError) {
    let (claimed, mechanism) = match chosen {
        Chosen::Plain => (eddy_security::plain::claimed_user(token), "PLAIN"),
        Chosen::Scram(server) => (
            server.claimed_user().map(str::to_string),
            server.mechanism().name(),
        ),
    };
    let principal =
        claimed.map_or_else(|| "unknown".to_string(), |u| Principal::User(u).to_string());
    warn!(%principal, mechanism, error = %error, "a Kafka client failed to authenticate");
}

/// Runs one step of the chosen mechanism; the principal once the client has proved who it is.
fn step(
    access: &Access,
    chosen: &mut Chosen,
    token: &[u8],
) -> Result<(Vec<u8>, Option<Principal>), SecurityError> {
    match chosen {
        Chosen::Plain => {
            let user = eddy_security::plain::authenticate(&access.users, token)?;
            info!(principal = %Principal::User(user.clone()), mechanism = "PLAIN", "a Kafka client authenticated");
            Ok((Vec::new(), Some(Principal::User(user))))
        }
        Chosen::Scram(server) => {
            let mechanism = server.mechanism();
            match server.step(token, |user| access.users.credential(user, mechanism))? {
                Step::Continue(reply) => Ok((reply, None)),
                Step::Authenticated { user, message } => {
                    info!(principal = %Principal::User(user.clone()), mechanism = mechanism.name(), "a Kafka client authenticated");
                    Ok((message, Some(Principal::User(user))))
                }
            }
        }
    }
}
