//! Any [`tower_service::Service`] over HTTP/3: [`serve`] runs a [`Server`]'s accept loop and
//! hands each request to the service in a task of its own, with graceful shutdown.
//!
//! The service takes `http::Request<`[`RequestBody`]`>` (the request's DATA as data frames,
//! its trailers as a trailers frame) and returns an `http::Response` with any
//! [`http_body::Body`]. The response body is polled only once the previous piece has been
//! written to the QUIC stream, so a slow client holds back the body by flow control rather than
//! letting it pile up in memory; a trailers frame is sent as the trailer section.
//!
//! Failures stay with their request, never the connection:
//! - the service's error, or a panic in its future, is answered 500 (its head was not sent);
//! - an error or a panic while the response body is sent resets the stream with
//!   H3_INTERNAL_ERROR, since the head is out (RFC 9114 §4.1.1: a server that cannot finish a
//!   response resets the stream);
//! - the client's reset or STOP_SENDING ends the request's task.
//!
//! [`Serve::with_graceful_shutdown`] stops on a signal: no new connections, GOAWAY on each
//! connection ([`Connection::shutdown`], RFC 9114 §5.2), and the requests in flight finish,
//! bounded by a timeout.
//!
//! [`Serve::accept_with`] puts something between a connection and the service: a type that
//! implements [`Accept`] takes the connection's requests and keeps some for itself. This is how
//! WebTransport shares the port: `quay_webtransport::server::Connection` takes over the
//! connection, keeps the sessions' Extended CONNECT requests and streams, and passes on the
//! other requests, which the [`Accept`] implementation returns as [`Incoming::Request`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::Bytes;
//! use quay_h3::server::RequestBody;
//! use quay_h3::{Config, Server};
//! use quay_h3::quay_transport::Identity;
//!
//! let server = Server::bind("[::]:4433".parse()?, Identity::self_signed(["localhost"])?, Config::default())?;
//! let service = tower::service_fn(|request: http::Request<RequestBody>| async move {
//!     let body = http_body_util::Full::new(Bytes::from(request.uri().path().to_owned()));
//!     Ok::<_, std::convert::Infallible>(http::Response::new(body))
//! });
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! # drop(stop);
//! let signal = async { let _ = stopped.await; };
//! quay_h3::serve(server, service)
//!     .with_graceful_shutdown(signal, std::time::Duration::from_secs(10))
//!     .await;
//! # Ok(())
//! # }
//! ```
//!
//! This module does not route requests (that is the service's job, an axum `Router` say), and
//! it does not make tunnels of CONNECT requests (their bytes reach the service as a body).

use std::any::Any;
use std::future::{Future, IntoFuture, poll_fn};
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::{Request, Response, StatusCode};
use http_body::Body;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_service::Service;

use crate::error::{Code, ConnectionError};
use crate::server::{
    Connection, IncomingRequest, RequestBody, RequestStream, Server, send_response_head,
};
use crate::stream::SendHalf;

/// An error of a service or a body, as tower and http-body pass them.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The services [`serve`] runs: a [`tower_service::Service`] of `http::Request<`[`RequestBody`]`>`
/// whose response has an [`http_body::Body`], whose error (like the body's) converts to a boxed
/// error, and which can be cloned into each request's task. Implemented for every such service
/// (an axum `Router`, a `tower::service_fn`, ...); not to be implemented by hand.
pub trait HttpService:
    Service<
        Request<RequestBody>,
        Response = Response<Self::ResponseBody>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    /// The response body.
    type ResponseBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> HttpService for S
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    type ResponseBody = B;
}

/// What [`serve`] gives a service on a connection: the connection's requests, minus those
/// something else keeps (see the [module docs](self)).
pub trait Accept: Send + Sync + 'static {
    /// The next request for the service. `Ok(None)` once the connection is done.
    fn accept(&self) -> impl Future<Output = Result<Option<Incoming>, ConnectionError>> + Send;

    /// The HTTP/3 connection, for its graceful shutdown.
    fn connection(&self) -> &Connection;
}

/// A request [`Accept`] took off a connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A request stream whose head is still to be read (read in the request's own task, so
    /// that a slow client holds up no other request).
    Stream(IncomingRequest),
    /// A request whose head was read already. Boxed: a head is large.
    Request(Box<Request<()>>, Box<RequestStream>),
}

impl Accept for Connection {
    async fn accept(&self) -> Result<Option<Incoming>, ConnectionError> {
        Ok(self.accept_stream().await?.map(Incoming::Stream))
    }

    fn connection(&self) -> &Connection {
        self
    }
}

/// Serves `service` on every connection of `server`, each request in a task of its own. Await
/// the result (or spawn it) to run; it ends when the server's endpoints are closed, or after a
/// graceful shutdown ([`Serve::with_graceful_shutdown`]). Must be awaited inside a tokio
/// runtime.
pub fn serve<S>(server: Server, service: S) -> Serve<S, fn(Connection) -> Connection> {
    Serve {
        server,
        service,
        accept: std::convert::identity,
        shutdown: None,
    }
}

/// A server and the service it serves, from [`serve`]; await it to run.
#[must_use = "a Serve does nothing until awaited"]
pub struct Serve<S, F> {
    server: Server,
    service: S,
    accept: F,
    shutdown: Option<Shutdown>,
}

/// When and how a [`Serve`] shuts down gracefully.
struct Shutdown {
    signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    timeout: Duration,
}

impl<S, F> std::fmt::Debug for Serve<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("server", &self.server)
            .field("graceful_shutdown", &self.shutdown.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, F> Serve<S, F> {
    /// Shuts down gracefully once `signal` completes: stops taking new connections (they are
    /// refused), sends GOAWAY on every connection (RFC 9114 §5.2), lets the requests in flight
    /// finish, and closes each connection once they have, or after `timeout`; then the serve
    /// future ends.
    pub fn with_graceful_shutdown<G>(mut self, signal: G, timeout: Duration) -> Self
    where
        G: Future<Output = ()> + Send + 'static,
    {
        self.shutdown = Some(Shutdown {
            signal: Box::pin(signal),
            timeout,
        });
        self
    }

    /// Hands each connection to `accept` first, and serves the requests its result returns
    /// (see [`Accept`]): how WebTransport sessions share the port with the service.
    pub fn accept_with<A, G>(self, accept: G) -> Serve<S, G>
    where
        G: Fn(Connection) -> A + Send + 'static,
        A: Accept,
    {
        Serve {
            server: self.server,
            service: self.service,
            accept,
            shutdown: self.shutdown,
        }
    }
}

impl<S, F, A> IntoFuture for Serve<S, F>
where
    S: HttpService,
    F: Fn(Connection) -> A + Send + 'static,
    A: Accept,
{
    type Output = ();
    type IntoFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl<S, F> Serve<S, F> {
    async fn run<A>(self)
    where
        S: HttpService,
        F: Fn(Connection) -> A + Send + 'static,
        A: Accept,
    {
        let Self {
            server,
            service,
            accept,
            shutdown,
        } = self;
        let (mut signal, timeout) = match shutdown {
            Some(Shutdown { signal, timeout }) => (signal, Some(timeout)),
            None => (Box::pin(std::future::pending()) as Pin<Box<_>>, None),
        };
        let (stop, stopped) = watch::channel(false);
        let mut connections = JoinSet::new();
        // Bounded by the endpoints: each turn takes a connection, reaps one, or ends.
        loop {
            tokio::select! {
                () = &mut signal => break,
                accepted = server.accept() => match accepted {
                    Some(connection) => {
                        let connection = accept(connection);
                        let task = serve_connection(connection, service.clone(), stopped.clone(), timeout);
                        connections.spawn(task);
                    }
                    None => break,
                },
                Some(_) = connections.join_next() => {}
            }
        }
        // New connections are refused from now on; those open get GOAWAY.
        for endpoint in server.endpoints() {
            endpoint.set_server_config(None);
        }
        let _ = stop.send(true);
        // Each ends once its connection closes, within the timeout.
        while connections.join_next().await.is_some() {}
    }
}

/// Serves the requests of one connection until it closes; on `stop`, shuts it down gracefully
/// within `timeout`.
async fn serve_connection<A: Accept, S: HttpService>(
    connection: A,
    service: S,
    mut stop: watch::Receiver<bool>,
    timeout: Option<Duration>,
) {
    let mut requests = JoinSet::new();
    let shutdown = async {
        if stop.wait_for(|stop| *stop).await.is_err() {
            // The serve future is gone: no shutdown will be asked for.
            std::future::pending::<()>().await;
        }
        let timeout = timeout.unwrap_or(Duration::ZERO);
        connection.connection().shutdown(timeout).await;
    };
    let mut shutdown = pin!(shutdown);
    let mut shut_down = false;
    // Bounded by the connection: each turn takes a request, reaps one, or ends.
    loop {
        tokio::select! {
            accepted = connection.accept() => match accepted {
                Ok(Some(incoming)) => {
                    requests.spawn(respond(incoming, service.clone()));
                }
                Ok(None) | Err(_) => break,
            },
            Some(_) = requests.join_next() => {}
            // `accept` goes on meanwhile, refusing requests after the GOAWAY.
            () = &mut shutdown, if !shut_down => shut_down = true,
        }
    }
    // The connection is closed: what is left of its requests can reach no one.
    requests.shutdown().await;
}

/// Answers one request with the service.
async fn respond<S, B>(incoming: Incoming, mut service: S)
where
    S: Service<Request<RequestBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let (request, stream) = match incoming {
        Incoming::Stream(stream) => match stream.resolve().await {
            Ok(Some(request)) => request,
            // Refused or reset already, or not a request after all.
            Ok(None) | Err(_) => return,
        },
        Incoming::Request(request, stream) => (*request, *stream),
    };
    let id = stream.id();
    let (mut send, recv, head_request) = stream.into_serve_parts();
    let request = request.map(|()| RequestBody::new(recv));
    let called = CatchUnwind::new(async move {
        let ready = poll_fn(|cx| service.poll_ready(cx)).await;
        ready.map_err(Into::<BoxError>::into)?;
        service.call(request).await.map_err(Into::<BoxError>::into)
    });
    let response = match called.await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            tracing::debug!(stream = %id, %error, "service failed: 500");
            return internal_error(send).await;
        }
        Err(panic) => {
            tracing::warn!(stream = %id, panic = panic_message(&panic), "service panicked: 500");
            return internal_error(send).await;
        }
    };
    let (parts, body) = response.into_parts();
    if send_response_head(&mut send, &Response::from_parts(parts, ()))
        .await
        .is_err()
    {
        // Gone, or a head that cannot be sent: dropping the half resets the stream.
        return;
    }
    if head_request {
        // RFC 9110 §9.3.2: a response to HEAD has no content.
        let _ = send.finish();
        return;
    }
    match CatchUnwind::new(send_body(&mut send, body)).await {
        Ok(Ok(())) => {}
        // The client reset or stopped the stream, or the connection is gone.
        Ok(Err(BodyFailed::Stream)) => {}
        Ok(Err(BodyFailed::Body(error))) => {
            tracing::debug!(stream = %id, %error, "response body failed: reset");
            send.reset(Code::H3_INTERNAL_ERROR);
        }
        Err(panic) => {
            let panic = panic_message(&panic);
            tracing::warn!(stream = %id, panic, "response body panicked: reset");
            send.reset(Code::H3_INTERNAL_ERROR);
        }
    }
}

/// Answers 500 with no body.
async fn internal_error(mut send: SendHalf) {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    if send_response_head(&mut send, &response).await.is_ok() {
        let _ = send.finish();
    }
}

/// Why a response body was not sent to its end.
enum BodyFailed {
    /// The body's own error.
    Body(BoxError),
    /// The stream's: the client reset or stopped it, or the connection is gone.
    Stream,
}

/// Sends `body` on `send`: each data frame as DATA, a trailers frame as the trailer section,
/// then FIN. The body is polled only when the previous piece has been written.
async fn send_body<B>(send: &mut SendHalf, body: B) -> Result<(), BodyFailed>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut body = pin!(body);
    // Bounded by the body: each turn sends one of its frames or ends.
    while !body.is_end_stream() {
        let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await else {
            break;
        };
        let frame = frame.map_err(|error| BodyFailed::Body(error.into()))?;
        match frame.into_data() {
            Ok(mut data) => {
                let data = data.copy_to_bytes(data.remaining());
                send.send_data(data).await.map_err(|_| BodyFailed::Stream)?;
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    // RFC 9114 §4.1: the trailer section ends the message.
                    return send
                        .send_trailers(trailers)
                        .await
                        .map_err(|_| BodyFailed::Stream);
                }
                // A frame of a kind HTTP/3 does not carry.
            }
        }
    }
    send.finish().map_err(|_| BodyFailed::Stream)
}

/// A panic's message, when it has one.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    match panic.downcast_ref::<&str>() {
        Some(message) => message,
        None => panic.downcast_ref::<String>().map_or("", String::as_str),
    }
}

/// A future whose panic is caught and returned as its output (`Err`) rather than unwinding
/// into the task that polls it.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> CatchUnwind<F> {
    fn new(future: F) -> Self {
        Self(Box::pin(future))
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.0.as_mut();
        // The future is not polled again after a panic: its state is not looked at.
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
