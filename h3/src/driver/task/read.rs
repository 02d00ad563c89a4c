//! Reading the peer's streams, for the connection's task ([`super::drive`]): the prefixes of
//! new streams (a unidirectional stream's type, a bidirectional stream's extension signal), each
//! stream routed by them, and the peer's control and QPACK streams fed into the state machine.
//!
//! It does not write our streams or open them (that is [`super`]'s), and it decides no protocol
//! rule: [`ConnectionState`](crate::connection::ConnectionState) does.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use quay_transport::{RecvStream, VarInt};

use super::{Driver, Incoming, OURS};
use crate::connection::UniStream;
use crate::driver::extensions::{hand_out, hand_out_bidi};
use crate::driver::prefix::poll_prefix;
use crate::driver::shared::{BUDGET, Shared};
use crate::error::Code;
use crate::proto::stream::{UniStreamHeader, decode_bidi_signal, decode_uni_prefix};
use crate::qlog::StreamKind;
use crate::stream::extension::ExtensionStream;

impl Driver<'_> {
    /// Reads the prefixes of new peer streams and routes the streams whose prefix is complete.
    /// Breaks once the connection failed.
    pub(super) fn read_incoming(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Shared,
    ) -> ControlFlow<()> {
        let mut i = 0;
        while i < self.incoming.len() {
            let Incoming { recv, send, buf } = &mut self.incoming[i];
            let ready = if send.is_some() {
                let signals = &shared.config.extension_bidi_signals;
                poll_prefix(cx, recv, buf, |cur| {
                    decode_bidi_signal(signals, cur).map(|signal| (None, signal))
                })
            } else {
                let types = &shared.config.extension_uni_stream_types;
                poll_prefix(cx, recv, buf, |cur| {
                    decode_uni_prefix(types, cur).map(|header| (Some(header), None))
                })
            };
            let Poll::Ready(prefix) = ready.map(|read| read.ok().flatten()) else {
                i += 1;
                continue;
            };
            // In order: streams are handed out in the order the peer opened them.
            let Incoming { recv, send, .. } = self.incoming.remove(i);
            // A stream that ended or failed before its prefix is dropped.
            let Some(((header, signal), rest)) = prefix else {
                continue;
            };
            match (header, signal, send) {
                (Some((header, session_id)), _, _) => {
                    self.route_uni(shared, header, session_id, recv, rest)?;
                }
                (None, Some(signal), Some(send)) => {
                    hand_out_bidi(shared, signal, send, recv, rest);
                }
                _ => {
                    if let Err(error) = shared.lock().proto.handle_peer_bidi_stream(false) {
                        shared.fail(error);
                        return ControlFlow::Break(());
                    }
                }
            }
        }
        if self.incoming.is_empty() {
            // Keep no buffer while idle.
            self.incoming = Vec::new();
        }
        ControlFlow::Continue(())
    }

    /// Routes a peer unidirectional stream by its type (RFC 9114 §6.2).
    fn route_uni(
        &mut self,
        shared: &Shared,
        header: UniStreamHeader,
        session_id: Option<VarInt>,
        mut recv: RecvStream,
        rest: Bytes,
    ) -> ControlFlow<()> {
        let ty = header.ty();
        let kind = shared.lock().proto.handle_uni_stream(header);
        if let Some(qlog) = &shared.qlog {
            let logged = match kind {
                Err(_) if matches!(header, UniStreamHeader::Push { .. }) => StreamKind::Push,
                Ok(kind @ (UniStream::Control | UniStream::Encoder | UniStream::Decoder)) => {
                    StreamKind::Known(kind)
                }
                Ok(UniStream::Extension(ty)) => StreamKind::Known(UniStream::Extension(ty)),
                _ => StreamKind::Unknown(ty),
            };
            crate::qlog::stream_type_set(qlog, false, u64::from(recv.id()), logged);
        }
        match kind {
            Err(error) => {
                shared.fail(error);
                return ControlFlow::Break(());
            }
            Ok(UniStream::Extension(ty)) => {
                if let Some(session_id) = session_id {
                    hand_out(
                        shared,
                        ExtensionStream::Uni {
                            ty,
                            session_id,
                            recv,
                            buffered: rest,
                        },
                    );
                }
            }
            Ok(kind @ (UniStream::Control | UniStream::Encoder | UniStream::Decoder)) => {
                if !rest.is_empty() && !feed(shared, kind, u64::from(recv.id()), rest) {
                    return ControlFlow::Break(());
                }
                *self.peer_slot(kind) = Some(recv);
            }
            // RFC 9114 §6.2.3: an unknown stream is dropped if it is whole and small, and
            // stopped otherwise.
            Ok(_) => {
                if !read_whole(&mut recv, rest.len()) {
                    let _ = recv.stop(Code::H3_STREAM_CREATION_ERROR.to_varint());
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Reads the peer's critical streams into the state machine. Breaks once the connection
    /// failed; otherwise says whether a stream has more to read than one wake-up takes.
    pub(super) fn read_critical(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Shared,
    ) -> ControlFlow<(), bool> {
        let mut busy = false;
        for kind in OURS {
            let Some(slot) = self.peer(kind) else {
                continue;
            };
            let Some(recv) = slot else {
                continue;
            };
            let mut budget = BUDGET;
            loop {
                let read = pin!(recv.read_chunk(usize::MAX, true)).poll(cx);
                match read {
                    Poll::Ready(Ok(Some(chunk))) => {
                        if !feed(shared, kind, u64::from(recv.id()), chunk.bytes) {
                            return ControlFlow::Break(());
                        }
                    }
                    // RFC 9114 §6.2.1, RFC 9204 §4.2: closing a critical stream is a connection
                    // error.
                    Poll::Ready(Ok(None) | Err(quay_transport::ReadError::Reset(_))) => {
                        let error = shared.lock().proto.handle_critical_end(kind);
                        shared.fail(error);
                        return ControlFlow::Break(());
                    }
                    Poll::Ready(Err(_)) => {
                        *slot = None;
                        break;
                    }
                    Poll::Pending => break,
                }
                budget -= 1;
                if budget == 0 {
                    busy = true;
                    break;
                }
            }
        }
        ControlFlow::Continue(busy)
    }

    /// Where the peer's critical stream of `kind` is kept, if the QPACK streams have been
    /// needed (the control stream's place always exists).
    fn peer(&mut self, kind: UniStream) -> Option<&mut Option<RecvStream>> {
        match (kind, &mut self.qpack) {
            (UniStream::Control, _) => Some(&mut self.peer_control),
            (UniStream::Encoder, Some(qpack)) => Some(&mut qpack.peer_encoder),
            (_, Some(qpack)) => Some(&mut qpack.peer_decoder),
            (_, None) => None,
        }
    }

    /// Where the peer's critical stream of `kind` is kept, allocating the QPACK streams if
    /// needed.
    fn peer_slot(&mut self, kind: UniStream) -> &mut Option<RecvStream> {
        match kind {
            UniStream::Encoder => &mut self.qpack.get_or_insert_default().peer_encoder,
            UniStream::Decoder => &mut self.qpack.get_or_insert_default().peer_decoder,
            _ => &mut self.peer_control,
        }
    }
}

/// Reads what has arrived of `recv`, which has `read` bytes after its type already, without
/// waiting: true if its end came within what [`UniStream::discards_whole`] allows, so the
/// stream can be dropped without a STOP_SENDING (quinn sends one for a stream dropped before
/// its end was read).
fn read_whole(recv: &mut RecvStream, mut read: usize) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    // Bounded: each turn reads at least a byte, and the total is bounded below.
    loop {
        match pin!(recv.read_chunk(UniStream::DISCARD_LIMIT + 1, true)).poll(&mut cx) {
            Poll::Ready(Ok(Some(chunk))) => {
                read += chunk.bytes.len();
                if read > UniStream::DISCARD_LIMIT {
                    return false;
                }
            }
            Poll::Ready(Ok(None)) => return UniStream::discards_whole(read, true),
            Poll::Ready(Err(_)) | Poll::Pending => return false,
        }
    }
}

/// Feeds a chunk of a critical stream; returns false once the connection failed.
fn feed(shared: &Shared, kind: UniStream, stream_id: u64, chunk: Bytes) -> bool {
    let (result, flush, changed) = {
        let mut inner = shared.lock();
        let before = (
            inner.proto.peer_settings().is_some(),
            inner.proto.goaway_received(),
        );
        let result = match (kind, &shared.qlog) {
            (UniStream::Control, None) => inner.proto.handle_control(chunk).map(|()| false),
            (UniStream::Control, Some(qlog)) => inner
                .proto
                .handle_control_observed(chunk, |event| {
                    crate::qlog::frame_event(qlog, false, stream_id, event);
                })
                .map(|()| false),
            (UniStream::Encoder, _) => inner.proto.handle_encoder_stream(&chunk),
            _ => inner.proto.handle_decoder_stream(&chunk).map(|()| false),
        };
        let after = (
            inner.proto.peer_settings().is_some(),
            inner.proto.goaway_received(),
        );
        let changed = matches!(result, Ok(true)) || before != after;
        if let Some(qlog) = &shared.qlog {
            // The peer's encoder stream changes our decoder's table.
            for (table, event) in inner.proto.take_table_events() {
                crate::qlog::table_event(qlog, table, &event);
            }
            if !before.0
                && let Some(settings) = inner.proto.peer_settings()
            {
                crate::qlog::parameters_set(qlog, false, settings);
            }
        }
        (result, inner.flush_waker(), changed)
    };
    if let Some(driver) = flush {
        driver.wake();
    }
    if let Err(error) = result {
        shared.fail(error);
        return false;
    }
    if changed {
        shared.changed.notify_waiters();
        shared.maybe_close();
    }
    true
}
