//! WebTransport clients: [`Client`] is one HTTP/3 connection that opens sessions; [`connect()`]
//! is the one-call form for one session on its own connection.
//!
//! A client waits for the server's SETTINGS, checks that they allow WebTransport (Extended
//! CONNECT, HTTP datagrams, a WebTransport setting) and how many sessions, then sends the
//! CONNECT request: `:protocol webtransport-h3` to a draft-15+ server, `webtransport` to older
//! ones, with `sec-webtransport-http3-draft02: 1` to a draft-02-only server.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::Bytes;
//! use quay_transport::{CertificateHash, ClientBuilder, Trust};
//!
//! let hash: CertificateHash = "0a1b...".parse()?;
//! let builder = ClientBuilder::new().trust(Trust::CertificateHashes(vec![hash]));
//! let session = quay_webtransport::connect("https://localhost:4433/echo", &builder).await?;
//! let (mut send, mut recv) = session.open_bi().await?;
//! send.write_all(b"hello").await?;
//! send.finish()?;
//! let echo = recv.read_to_end(1024).await?;
//! session.close(0, "done");
//! # Ok(())
//! # }
//! ```

use crate::qlog::{initiator, session_event};
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Uri};
use quay_h3::proto::headers::Protocol;
use quay_h3::proto::settings::Settings;
use quay_transport::{ClientBuilder, Connection, Qlog};

use quay_h3::proto::VarInt;

use crate::config::Config;
use crate::core::table::client_session_limit;
use crate::error::{ConnectError, Missing};
use crate::proto::connect;
use crate::proto::settings::{Draft, FlowControlLimits, announced_session_count};
use crate::routes::{Routes, route_streams};
use crate::session::{Established, Session};

/// What to send with a session request besides the URL.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Extra request headers (`origin`, authorization, ...). Default none.
    pub headers: HeaderMap,
    /// Subprotocols to offer in `wt-available-protocols`, most preferred first. Default none.
    pub protocols: Vec<String>,
}

impl SessionOptions {
    /// Adds a request header.
    pub fn header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Offers a subprotocol (after those offered already).
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }
}

/// Opens a session to `url` (`https://host:port/path`) on a new connection from `builder`
/// (its [`Trust`](quay_transport::Trust) decides which certificates are accepted). The
/// connection closes when the session's last handle is dropped.
pub async fn connect(url: &str, builder: &ClientBuilder) -> Result<Session, ConnectError> {
    let client = Client::connect(url, builder, Config::default()).await?;
    client.open(url, &SessionOptions::default()).await
}

/// A client HTTP/3 connection that opens WebTransport sessions. Cheap to clone; the connection
/// closes when every clone and every session is dropped.
#[derive(Clone, Debug)]
pub struct Client {
    h3: quay_h3::client::Connection,
    routes: Arc<Routes>,
    flow_control: Option<FlowControlLimits>,
    /// [`Config::max_sessions`], our cap when flow control lets the server take more than one.
    max_sessions: usize,
}

impl Client {
    /// Connects to the host and port of `url` (443 when absent) with a new endpoint from
    /// `builder`. Opens no session yet.
    pub async fn connect(
        url: &str,
        builder: &ClientBuilder,
        config: Config,
    ) -> Result<Self, ConnectError> {
        let h3 = quay_h3::client::Connection::connect(url, builder, config.h3_config())
            .await
            .map_err(ConnectError::from_h3_connect)?;
        Ok(Self::start(h3, &config))
    }

    /// Connects to the host and port of `url` (443 when absent) on `endpoint`, which may carry
    /// any number of connections (one UDP socket for all of a program's clients; build it with
    /// `ClientBuilder::build`). Opens no session yet. Wait for the endpoint's `wait_idle`
    /// before the program exits, so that closes have left.
    pub async fn connect_on(
        endpoint: &quay_transport::Endpoint,
        url: &str,
        config: Config,
    ) -> Result<Self, ConnectError> {
        let h3 = quay_h3::client::Connection::connect_on(endpoint, url, config.h3_config())
            .await
            .map_err(ConnectError::from_h3_connect)?;
        Ok(Self::start(h3, &config))
    }

    /// Waits until the connection of the endpoint this client made for itself
    /// ([`Client::connect`]) is closed and its close has been sent: call it after closing the
    /// sessions (awaiting [`Session::close`]) and the connection, before a program exits.
    /// Returns at once for a client on an endpoint it was given.
    pub async fn wait_idle(&self) {
        self.h3.wait_idle().await;
    }

    /// Speaks HTTP/3 and WebTransport on an established QUIC connection (ALPN `h3`, datagrams
    /// on). Must be called inside a tokio runtime.
    pub fn new(connection: Connection, config: Config) -> Self {
        Self::start(
            quay_h3::client::Connection::new(connection, config.h3_config()),
            &config,
        )
    }

    /// As [`Client::new`], on a connection opened through a `Connector`
    /// (`quay_transport::Connector::connect`, e.g. on an endpoint shared by many connections):
    /// HTTP/3 and WebTransport events go to `qlog`, the connection's file that
    /// `Connector::connect` returned beside it, next to quinn's. `None` is [`Client::new`].
    pub fn with_qlog(connection: Connection, qlog: Option<Qlog>, config: Config) -> Self {
        Self::start(
            quay_h3::client::Connection::with_qlog(connection, qlog, config.h3_config()),
            &config,
        )
    }

    fn start(h3: quay_h3::client::Connection, config: &Config) -> Self {
        let routes = Routes::new(config.max_buffered_streams);
        if let Some(streams) = h3.take_extension_streams() {
            tokio::spawn(route_streams(
                streams,
                routes.clone(),
                h3.connection().clone(),
            ));
        }
        Self {
            h3,
            routes,
            flow_control: config.flow_control,
            max_sessions: config.max_sessions as usize,
        }
    }

    /// The QUIC connection.
    pub fn connection(&self) -> &Connection {
        self.h3.connection()
    }

    /// The HTTP/3 client underneath, for plain requests on the same connection.
    pub fn h3(&self) -> &quay_h3::client::Connection {
        &self.h3
    }

    /// Opens a session at `url` on this connection (its path and query are used; its authority
    /// too, as `:authority`).
    pub async fn open(&self, url: &str, options: &SessionOptions) -> Result<Session, ConnectError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ConnectError::Url(e.to_string()))?;
        if uri.scheme_str() != Some("https") || uri.authority().is_none() {
            return Err(ConnectError::Url(format!(
                "{url}: not an https URL with a host"
            )));
        }
        let settings = self.h3.settings().await.map_err(|error| match error {
            quay_h3::ConnectionError::Transport(error) => ConnectError::from_connection(error),
            error => ConnectError::Transport(error),
        })?;
        let (draft, limit) = check_settings(&settings)?;
        let flow = self
            .flow_control
            .zip(FlowControlLimits::from_settings(&settings));
        // A count the server announced binds (draft-07..14). Without one, draft-16 §5.1: with
        // flow control on, sessions share the connection and the server refuses those beyond
        // its own limit; without flow control, one session.
        let limit = client_session_limit(limit, flow.is_some(), self.max_sessions);
        let mut request = http::Request::new(());
        *request.method_mut() = Method::CONNECT;
        *request.uri_mut() = uri;
        *request.headers_mut() = options.headers.clone();
        let token = if draft >= Draft::Draft15 {
            Protocol::WEBTRANSPORT_H3
        } else {
            Protocol::WEBTRANSPORT
        };
        request.extensions_mut().insert(token);
        if draft == Draft::Draft02 {
            request.headers_mut().insert(
                connect::DRAFT02_REQUEST_HEADER,
                HeaderValue::from_static("1"),
            );
        }
        if let Some(value) = connect::encode_offered_protocols(&options.protocols) {
            request
                .headers_mut()
                .insert(connect::AVAILABLE_PROTOCOLS_HEADER, value);
        }
        if self.routes.sessions() >= limit {
            return Err(ConnectError::NotSupported(Missing::SessionRoom));
        }
        // Only for the qlog: nothing is copied without one.
        let request_path = self.h3.qlog().map(|_| request.uri().path().to_owned());
        let mut stream = self
            .h3
            .send_request(request)
            .await
            .map_err(ConnectError::from_h3)?;
        let id = VarInt::from(stream.id()).into_inner();
        if !self.routes.request(id, limit) {
            stream.cancel();
            return Err(ConnectError::NotSupported(Missing::SessionRoom));
        }
        if let Some(qlog) = stream.qlog() {
            session_event(qlog, "quay-webtransport:session_opened", id, |data| {
                data.str("initiator", initiator(true))
                    .str("path", request_path.as_deref().unwrap_or_default());
            });
        }
        let response = match stream.recv_response().await {
            Ok(response) => response,
            Err(error) => {
                self.routes.close(id);
                return Err(ConnectError::from_h3(error));
            }
        };
        if let Some(qlog) = stream.qlog() {
            let success = response.status().is_success();
            let name = if success {
                "quay-webtransport:session_accepted"
            } else {
                "quay-webtransport:session_refused"
            };
            session_event(qlog, name, id, |data| {
                data.str("initiator", initiator(false))
                    .u64("status", response.status().as_u16().into());
                if let Some(protocol) = connect::chosen_protocol(response.headers()) {
                    data.str("protocol", &protocol);
                }
            });
        }
        if !response.status().is_success() {
            self.routes.close(id);
            stream.cancel();
            return Err(ConnectError::Rejected(response.status()));
        }
        let protocol = connect::chosen_protocol(response.headers());
        let (send, recv) = stream.split();
        Session::new_http3(Established {
            conn: self.h3.connection().clone(),
            send,
            recv,
            routes: self.routes.clone(),
            protocol,
            draft,
            request: None,
            client: Some(self.h3.clone()),
            flow,
        })
        .map_err(|_| ConnectError::NotSupported(Missing::HttpDatagrams))
    }
}

/// The draft a server speaks and how many sessions it announced it takes on one connection, or
/// why it takes none.
fn check_settings(settings: &Settings) -> Result<(Draft, Option<usize>), ConnectError> {
    if !settings.enable_connect_protocol() {
        return Err(ConnectError::NotSupported(Missing::ExtendedConnect));
    }
    if !settings.h3_datagram() {
        return Err(ConnectError::NotSupported(Missing::HttpDatagrams));
    }
    let Some(draft) = Draft::from_settings(settings) else {
        return Err(ConnectError::NotSupported(Missing::WebTransportSetting));
    };
    // The largest announced limit, if any: the caller decides what none means.
    let limit =
        announced_session_count(settings).map(|limit| usize::try_from(limit).unwrap_or(usize::MAX));
    Ok((draft, limit))
}
