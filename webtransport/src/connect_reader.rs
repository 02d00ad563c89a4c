//! The task that reads one session's CONNECT stream: it hands each capsule, and the stream's
//! end, to the session's core in the order they were read, so that the end reason follows the
//! peer's bytes (draft-16 §6), then writes what the core asks for and retires the session's
//! routes.
//!
//! It decides nothing itself: what a capsule means, when the session ends and what to answer
//! are `crate::core::session`'s. Writing on the CONNECT stream is `crate::state`'s.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use quay_h3::Code;
use quay_h3::proto::capsule::{Capsule, CapsuleType};
use quay_h3::stream::RecvHalf;

use crate::core::session::{ReadOn, SessionCore};
use crate::proto::capsule::CAPSULE_TYPES;
use crate::routes::Routes;
use crate::state::SessionState;
use crate::waiter::WaitKey;

/// How long, after we close a session, its CONNECT stream is read for the peer's answer before
/// we stop reading it.
const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// Reads the CONNECT stream until the session ends: WT_CLOSE_SESSION, WT_DRAIN_SESSION, the
/// stream's end or reset, or the connection's loss, handing each to the session's core in the
/// order it was read. After a local close it goes on reading for [`CLOSE_LINGER`] for the
/// peer's answer. Then retires the session's routes.
///
/// The task lives as long as the session, so it is kept small (tokio's task sizes go in steps
/// of 128 bytes; this one is in the 512-byte step, its future 408 bytes, of which the CONNECT
/// stream's `RecvHalf` is 352): the capsules are read by polling
/// ([`poll_capsules`]) and the session's end is waited for through a waker in its state, so
/// the long wait keeps no future; the end ([`end_session`]), with its timer and locks, is
/// boxed; and it returns an `async move` block rather than being an `async fn`, whose
/// arguments rustc stores twice (once as passed, once as bound).
#[allow(clippy::manual_async_fn)] // On purpose: see above.
pub(crate) fn read_connect_stream(
    mut recv: RecvHalf,
    state: Arc<SessionState>,
    routes: Arc<Routes>,
    id: u64,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        recv.accept_capsules(&CAPSULE_TYPES);
        let mut waiting = WaitKey::NONE;
        let read = poll_fn(|cx| match poll_capsules(&mut recv, &state, cx) {
            Poll::Ready(read) => Poll::Ready(Some(read)),
            Poll::Pending => state.poll_ended(cx, &mut waiting).map(|()| None),
        })
        .await;
        state.forget(&mut waiting);
        // Boxed: it runs once, at the end, and the task should not keep room for its timer
        // and locks all session long.
        Box::pin(end_session(recv, state.clone(), routes, id, read)).await;
        state.set_connect_done();
    }
}

/// The end of [`read_connect_stream`]: after a local close (`read` is `None`), reads on for
/// [`CLOSE_LINGER`]; hands the CONNECT stream's end to the core and writes what it asks for;
/// retires the session's routes.
///
/// A function returning an `async move` block rather than an `async fn`, which would keep its
/// arguments twice (the CONNECT stream's reader is most of the future).
#[allow(clippy::manual_async_fn)] // On purpose: see above.
fn end_session(
    mut recv: RecvHalf,
    state: Arc<SessionState>,
    routes: Arc<Routes>,
    id: u64,
    read: Option<ConnectRead>,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let read = match read {
            Some(read) => read,
            None => {
                let linger = tokio::time::timeout(
                    CLOSE_LINGER,
                    poll_fn(|cx| poll_capsules(&mut recv, &state, cx)),
                );
                match linger.await {
                    Ok(read) => read,
                    Err(_) => {
                        recv.stop(state.with_core_then_write(SessionCore::handle_linger_over));
                        state.write_pending().await;
                        routes.close(id);
                        return;
                    }
                }
            }
        };
        match read {
            ConnectRead::Close(capsule) => {
                // The peer ended the session: all we may still send on the CONNECT stream is FIN,
                // which a connection close makes moot. Said before the application learns of the
                // close, so that a GOAWAY its reaction causes leaves at once.
                state.settle_connect().await;
                match state.with_core_then_write(|core| core.handle_capsule(&capsule)) {
                    ReadOn::FinOnly => after_close_capsule(&mut recv, &state).await,
                    ReadOn::Stop(code) => recv.stop(code),
                    ReadOn::Capsules => {}
                }
            }
            ConnectRead::Stopped => {}
            ConnectRead::Fin => state.with_core_then_write(SessionCore::handle_connect_fin),
            ConnectRead::Reset(code) => {
                state.with_core_then_write(|core| core.handle_connect_reset(code))
            }
            ConnectRead::Malformed(code) => {
                state.with_core_then_write(|core| core.handle_connect_malformed(code));
            }
            ConnectRead::Lost(error) => {
                state.with_core_then_write(|core| core.handle_connection_lost(error))
            }
        }
        state.write_pending().await;
        routes.close(id);
    }
}

/// After the peer's WT_CLOSE_SESSION (draft-16 §6): reads on, for at most [`CLOSE_LINGER`],
/// until the CONNECT stream ends, and tells the core how it ended (which answers FIN with
/// FIN, anything else with H3_MESSAGE_ERROR, and a peer too slow with WT_SESSION_GONE).
async fn after_close_capsule(recv: &mut RecvHalf, state: &Arc<SessionState>) {
    let rest = tokio::time::timeout(CLOSE_LINGER, poll_fn(|cx| recv.poll_clean_end(cx))).await;
    match rest {
        Ok(Ok(false)) => {
            recv.stop(state.with_core_then_write(SessionCore::handle_data_after_close))
        }
        // FIN, or the stream or connection is gone: nothing more to check.
        Ok(Ok(true) | Err(_)) => state.with_core_then_write(SessionCore::handle_connect_fin),
        Err(_) => recv.stop(state.with_core_then_write(SessionCore::handle_linger_over)),
    }
}

/// What ended the reading of the CONNECT stream, for [`end_session`].
enum ConnectRead {
    /// A WT_CLOSE_SESSION capsule, not yet handed to the core (see [`end_session`]).
    Close(Capsule),
    /// The core asked to stop reading (a malformed capsule, broken flow control); done.
    Stopped,
    /// The peer's FIN.
    Fin,
    /// The peer's reset, with its code.
    Reset(Code),
    /// Not capsules: with the code the reader stopped the stream with, if any.
    Malformed(Option<Code>),
    /// The connection's end.
    Lost(quay_h3::ConnectionError),
}

/// How many capsules one poll of [`poll_capsules`] handles before letting other tasks run.
const CAPSULE_BUDGET: usize = 32;

/// Reads capsules, handing each to the session's core, until the CONNECT stream says the
/// session is over. Polled by hand, so the task that waits here all session long keeps no
/// future for it.
fn poll_capsules(
    recv: &mut RecvHalf,
    state: &Arc<SessionState>,
    cx: &mut Context<'_>,
) -> Poll<ConnectRead> {
    for _ in 0..CAPSULE_BUDGET {
        let read = ready!(recv.poll_recv_capsule(cx));
        if let Ok(Some(capsule)) = &read {
            state.log(|qlog, id| crate::qlog::capsule(qlog, false, id, capsule));
        }
        let read = match read {
            Ok(Some(capsule)) if capsule.ty == CapsuleType::WT_CLOSE_SESSION => {
                ConnectRead::Close(capsule)
            }
            Ok(Some(capsule)) => match state.with_core(|core| core.handle_capsule(&capsule)) {
                ReadOn::Capsules | ReadOn::FinOnly => continue,
                ReadOn::Stop(code) => {
                    recv.stop(code);
                    ConnectRead::Stopped
                }
            },
            Ok(None) => ConnectRead::Fin,
            // RFC 9297 §3.3: a capsule cut short by FIN (or over our size bound) is a malformed
            // message; the reader stopped the stream with its code, and the stream is reset
            // with it too.
            Err(quay_h3::StreamError::Capsule(error)) => {
                ConnectRead::Malformed(Some(Code::from(error)))
            }
            Err(quay_h3::StreamError::Reset(code)) => ConnectRead::Reset(code),
            Err(quay_h3::StreamError::ConnectionLost(error)) => ConnectRead::Lost(error),
            Err(_) => ConnectRead::Malformed(None),
        };
        return Poll::Ready(read);
    }
    // More capsules than one turn takes: go on after other tasks.
    cx.waker().wake_by_ref();
    Poll::Pending
}
