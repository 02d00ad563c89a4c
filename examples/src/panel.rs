//! The demo's live panel, server side: a session's stats ([`Session::stats`]) sampled about once
//! a second and sent to the page over the session itself.
//!
//! # The feed
//!
//! [`feed`] opens one bidirectional stream on the session, the only stream the server opens
//! that way, so the page tells it apart from everything else it receives (the demo's echo
//! and chat use client-opened bidirectional and unidirectional streams). On it the server
//! writes one JSON object per sample, each on its own line (`\n`), and never finishes the
//! stream; it reads nothing from the page's half. The fields, named as in the W3C WebTransport
//! API's `WebTransportStats` where one fits:
//!
//! | field | meaning |
//! | --- | --- |
//! | `seq` | the sample's number, 0 first |
//! | `elapsedMs` | milliseconds since the feed started |
//! | `smoothedRttMs` | the connection's smoothed RTT, in milliseconds (fractional) |
//! | `bytesSent`, `bytesReceived` | stream payload bytes each way, the feed's own bytes left out |
//! | `feedBytes` | the bytes of this feed sent before this sample |
//! | `datagramsSent`, `datagramsReceived` | datagrams each way |
//! | `datagramsDroppedOnSend`, `datagramsDroppedOnReceive` | datagrams dropped each way |
//! | `streamsOpened`, `streamsAccepted` | streams the server opened (the feed left out) and accepted, both kinds |
//!
//! # Cost and bounds
//!
//! One task per session, which ends when the session does or when the page stops or resets
//! the feed. A sample is taken only when the previous line is written: a page that does not
//! read stalls its feed on QUIC flow control, and the samples it misses are skipped, not
//! queued. [`Session::stats`] reads a few relaxed atomics and allocates nothing; a line is a
//! few hundred bytes.
//!
//! This module does not draw anything: the page plots the samples itself
//! (`examples/demo/index.html`).

use std::fmt::Write as _;
use std::time::Duration;

use quay_webtransport::stats::SessionStats;
use quay_webtransport::{Session, SessionError, StreamError};
use tokio::time::{Instant, MissedTickBehavior};

/// How often [`feed`] samples the session.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The longest line [`sample_line`] writes (every field at its largest value).
pub const MAX_LINE: usize = 512;

/// Sends `session`'s stats to the peer, one [`sample_line`] every [`INTERVAL`], on a
/// bidirectional stream it opens (see the [module documentation](self)), until the session ends
/// or the peer stops the stream. Returns why it ended.
pub async fn feed(session: Session) -> FeedEnd {
    tokio::select! {
        end = samples(&session) => end,
        reason = session.closed() => FeedEnd::Session(reason),
    }
}

/// Why [`feed`] ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum FeedEnd {
    /// The session ended.
    Session(SessionError),
    /// The feed's stream failed: the peer stopped or reset it, or the session ended under it.
    Stream(StreamError),
}

impl std::fmt::Display for FeedEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Session(reason) => write!(f, "the session ended: {reason}"),
            Self::Stream(error) => write!(f, "the stats stream failed: {error}"),
        }
    }
}

/// Opens the stream and writes a sample per tick, until a write fails.
async fn samples(session: &Session) -> FeedEnd {
    let (mut send, recv) = match session.open_bi().await {
        Ok(stream) => stream,
        Err(reason) => return FeedEnd::Session(reason),
    };
    // Nothing is read from the page's half; dropping it asks the page to send nothing.
    drop(recv);
    let start = Instant::now();
    let mut ticks = tokio::time::interval(INTERVAL);
    // A stalled write skips samples rather than sending a burst of stale ones after it.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut sent = 0u64;
    let mut line = String::with_capacity(MAX_LINE);
    let mut seq = 0u64;
    loop {
        ticks.tick().await;
        line.clear();
        sample_line(&mut line, seq, start.elapsed(), &session.stats(), sent);
        if let Err(error) = send.write_all(line.as_bytes()).await {
            return FeedEnd::Stream(error);
        }
        sent += line.len() as u64;
        seq += 1;
    }
}

/// Appends one sample's JSON line, `\n` included, to `line`: `stats` taken `elapsed` after the
/// feed started, `feed_bytes` the feed's bytes written before it (left out of `bytesSent`),
/// and the feed's own stream left out of `streamsOpened`.
pub fn sample_line(
    line: &mut String,
    seq: u64,
    elapsed: Duration,
    stats: &SessionStats,
    feed_bytes: u64,
) {
    let streams_opened = stats
        .streams_opened_bidi
        .saturating_add(stats.streams_opened_uni)
        .saturating_sub(1);
    let streams_accepted = stats
        .streams_accepted_bidi
        .saturating_add(stats.streams_accepted_uni);
    // Only numbers: nothing needs escaping. Writing to a String cannot fail.
    let _ = writeln!(
        line,
        "{{\"seq\":{seq},\"elapsedMs\":{elapsed},\"smoothedRttMs\":{rtt:.3},\
         \"bytesSent\":{bytes_sent},\"bytesReceived\":{bytes_received},\"feedBytes\":{feed_bytes},\
         \"datagramsSent\":{datagrams_sent},\"datagramsReceived\":{datagrams_received},\
         \"datagramsDroppedOnSend\":{dropped_send},\"datagramsDroppedOnReceive\":{dropped_receive},\
         \"streamsOpened\":{streams_opened},\"streamsAccepted\":{streams_accepted}}}",
        elapsed = elapsed.as_millis(),
        rtt = stats.rtt.as_secs_f64() * 1e3,
        bytes_sent = stats.bytes_sent.saturating_sub(feed_bytes),
        bytes_received = stats.bytes_received,
        datagrams_sent = stats.datagrams_sent,
        datagrams_received = stats.datagrams_received,
        dropped_send = stats.datagrams_dropped_on_send,
        dropped_receive = stats.datagrams_dropped_on_receive,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_one_json_line_without_the_feed() {
        let mut stats = SessionStats::default();
        stats.bytes_sent = 1_000;
        stats.bytes_received = 200;
        stats.datagrams_sent = 3;
        stats.datagrams_received = 4;
        stats.datagrams_dropped_on_send = 1;
        stats.datagrams_dropped_on_receive = 2;
        stats.streams_opened_bidi = 1;
        stats.streams_accepted_bidi = 5;
        stats.streams_accepted_uni = 1;
        stats.rtt = Duration::from_micros(1_250);
        let mut line = String::new();
        sample_line(&mut line, 7, Duration::from_millis(7_003), &stats, 900);
        assert_eq!(
            line,
            "{\"seq\":7,\"elapsedMs\":7003,\"smoothedRttMs\":1.250,\"bytesSent\":100,\
             \"bytesReceived\":200,\"feedBytes\":900,\"datagramsSent\":3,\"datagramsReceived\":4,\
             \"datagramsDroppedOnSend\":1,\"datagramsDroppedOnReceive\":2,\"streamsOpened\":0,\
             \"streamsAccepted\":6}\n"
        );
    }

    #[test]
    fn the_longest_sample_fits_max_line() {
        let mut stats = SessionStats::default();
        stats.bytes_sent = u64::MAX;
        stats.bytes_received = u64::MAX;
        stats.datagrams_sent = u64::MAX;
        stats.datagrams_received = u64::MAX;
        stats.datagrams_dropped_on_send = u64::MAX;
        stats.datagrams_dropped_on_receive = u64::MAX;
        stats.streams_opened_bidi = u64::MAX / 2;
        stats.streams_opened_uni = u64::MAX / 2;
        stats.streams_accepted_bidi = u64::MAX / 2;
        stats.streams_accepted_uni = u64::MAX / 2;
        stats.rtt = Duration::from_secs(u64::from(u32::MAX));
        let mut line = String::new();
        sample_line(&mut line, u64::MAX, Duration::MAX, &stats, 0);
        assert!(line.len() <= MAX_LINE, "{} bytes: {line}", line.len());
        assert_eq!(line.matches('\n').count(), 1);
    }
}
