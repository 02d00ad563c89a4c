//! [`Closing`]: the future [`Session::close`](super::Session::close) returns, which waits for
//! the peer's answer to a close.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::state::SessionState;

/// A session's close, started by [`Session::close`](super::Session::close); await it to wait
/// until the CONNECT stream is done: the peer answered with its FIN or its own close, or the few
/// seconds a closed session waits for that passed, or the connection is gone. Ready at once on a
/// raw session.
pub struct Closing {
    state: Option<ClosingState>,
}

enum ClosingState {
    Started(Arc<SessionState>),
    /// Boxed: built on the first poll; a close is rare.
    Waiting(Pin<Box<dyn Future<Output = ()> + Send>>),
}

impl Closing {
    /// A close that waits for the CONNECT stream of `state` to be done.
    pub(super) fn started(state: Arc<SessionState>) -> Self {
        Self {
            state: Some(ClosingState::Started(state)),
        }
    }

    /// A close with nothing to wait for.
    pub(super) fn done() -> Self {
        Self { state: None }
    }
}

impl fmt::Debug for Closing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Closing")
            .field("done", &self.state.is_none())
            .finish()
    }
}

impl Future for Closing {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let waiting = match self.state.take() {
            None => return Poll::Ready(()),
            Some(ClosingState::Started(state)) => {
                Box::pin(async move { state.connect_done().await }) as Pin<Box<_>>
            }
            Some(ClosingState::Waiting(waiting)) => waiting,
        };
        let mut waiting = waiting;
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                self.state = Some(ClosingState::Waiting(waiting));
                Poll::Pending
            }
        }
    }
}
