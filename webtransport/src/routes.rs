//! [`Routes`]: the sessions of one connection, where the peer's WebTransport streams go. It is
//! the session table (`crate::core::table`) behind a `std::sync::Mutex`, and the calls that
//! carry out its answers (hand a stream to its session, refuse it, close the connection), plus
//! [`route_streams`], the task that feeds it a client connection's streams.
//!
//! Which session may be requested, and when a stream is refused with which code, are the
//! table's rules, not this module's. A server connection's task routes its streams itself
//! ([`crate::server`]).

use std::sync::{Arc, Mutex, MutexGuard};

use quay_h3::stream::ExtensionStream;
use quay_transport::Connection;

use crate::core::table::{Route, SessionTable};
use crate::proto::error::WT_SESSION_GONE;
use crate::state::SessionState;

/// The per-connection table from session ID to session, where the peer's WebTransport streams
/// go: a [`SessionTable`] behind a lock, and the calls that carry out its answers.
#[derive(Debug)]
pub(crate) struct Routes {
    inner: Mutex<SessionTable<ExtensionStream, Arc<SessionState>>>,
}

impl Routes {
    pub(crate) fn new(max_buffered: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(SessionTable::new(max_buffered)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SessionTable<ExtensionStream, Arc<SessionState>>> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Refuses, outside the lock, the streams the table gave up.
    fn refuse(mut table: MutexGuard<'_, SessionTable<ExtensionStream, Arc<SessionState>>>) {
        let refused: Vec<_> = std::iter::from_fn(|| table.poll_refused()).collect();
        drop(table);
        for stream in refused {
            stream.refuse(WT_SESSION_GONE);
        }
    }

    /// Sessions requested or open on the connection.
    pub(crate) fn sessions(&self) -> usize {
        self.lock().sessions()
    }

    /// Hands a peer stream to its session, buffers it, or refuses it (see
    /// [`SessionTable::handle_stream`]).
    pub(crate) fn route(&self, stream: ExtensionStream, conn: &Connection) {
        let (ExtensionStream::Uni { session_id, .. } | ExtensionStream::Bidi { session_id, .. }) =
            &stream
        else {
            return drop(stream);
        };
        let id = session_id.into_inner();
        let route = self.lock().handle_stream(id, stream);
        match route {
            Route::Deliver(session, stream) => {
                if let Err(stream) = session.push(stream) {
                    stream.refuse(WT_SESSION_GONE);
                }
            }
            Route::Buffered => {}
            Route::Refuse(stream, code) => stream.refuse(code),
            Route::CloseConnection(code) => conn.close(
                code.to_varint(),
                b"WebTransport session ID is not a client bidirectional stream",
            ),
        }
    }

    /// A CONNECT request for `id` arrived (server) or was sent (client). `false`, and nothing
    /// changes, when `limit` sessions are requested or open already.
    pub(crate) fn request(&self, id: u64, limit: usize) -> bool {
        self.lock().handle_request(id, limit)
    }

    /// The session `id` is established: its buffered streams and those to come go to
    /// `session`'s queues.
    pub(crate) fn open(&self, id: u64, session: &Arc<SessionState>) {
        let mut table = self.lock();
        // Pushed under the table's lock, so that no later stream overtakes them.
        for arrival in table.handle_established(id, session.clone()) {
            // The session has not ended: it is being set up.
            let _ = session.push(arrival);
        }
    }

    /// The session `id` ended or was refused: streams waiting for it, and later ones, get
    /// WT_SESSION_GONE. Idempotent.
    pub(crate) fn close(&self, id: u64) {
        let mut table = self.lock();
        table.handle_close(id);
        Self::refuse(table);
    }

    /// The connection is gone: every waiting stream is refused and every session's queues end.
    pub(crate) fn connection_closed(&self) {
        let mut table = self.lock();
        table.handle_connection_closed();
        Self::refuse(table);
    }
}

/// Reads a connection's WebTransport streams and routes them until the connection is gone.
pub(crate) async fn route_streams(
    mut streams: quay_h3::stream::ExtensionStreams,
    routes: Arc<Routes>,
    conn: Connection,
) {
    while let Some(stream) = streams.next().await {
        routes.route(stream, &conn);
    }
    routes.connection_closed();
}
