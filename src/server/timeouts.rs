//! The two waits of a client connection, kept apart (hyper has one timer that
//! covers both): the idle keep-alive timeout, how long a connection may sit with
//! no request in flight and nothing sent either way (nginx's
//! `keepalive_timeout`), and the header read timeout, how long a request head
//! may take from its first byte, or from accept for the first request (nginx's
//! `client_header_timeout`, the slowloris defence).
//!
//! A wrapper around the connection's byte stream sees every read and write; the
//! request handler tells it how many requests are in flight through
//! `ConnInfo`. One timer per connection, re-armed about once per request:
//! idle (from the last write), reading a head (from its first byte), busy
//! (only a wake-up every keepalive_timeout to look again: upstream and body
//! timeouts apply). HTTP/2 connections, recognised by their preface, have no
//! head phase: any frame (a PING too) is activity.

use super::listener::ConnInfo;
use crate::metrics::{count_answer, Answer, GLOBAL};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// What the timer is set for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request is in flight: the timer only makes the connection look again,
    /// since hyper does not poll the read side after answering.
    Busy,
    Idle,
    Head,
}

/// A client stream with the idle and header read timeouts.
pub struct Timed<I> {
    io: I,
    conn: Arc<ConnInfo>,
    idle: Duration,
    head: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: Option<(Phase, Instant)>,
    /// The last write, or the last read of an HTTP/2 connection.
    last_activity: Instant,
    /// When the first byte of a request head came (from accept for the first).
    head_started: Option<Instant>,
    /// Requests started when last looked.
    seen: u64,
    /// None until the first bytes tell whether this is HTTP/2.
    h2: Option<bool>,
}

impl<I> Timed<I> {
    /// Wraps `io`; the first request's head must arrive within `head` from now.
    pub fn new(io: I, conn: Arc<ConnInfo>, idle: Duration, head: Duration) -> Timed<I> {
        let now = Instant::now();
        Timed {
            io,
            conn,
            idle,
            head,
            sleep: Box::pin(tokio::time::sleep_until(now + head)),
            armed: None,
            last_activity: now,
            head_started: Some(now),
            seen: 0,
            h2: None,
        }
    }

    fn on_bytes(&mut self, bytes: &[u8]) {
        if self.h2.is_none() && bytes.len() >= 3 {
            // No HTTP/1 method is PRI: it only begins the HTTP/2 preface.
            self.h2 = Some(bytes[..3] == H2_PREFACE[..3]);
        }
        if self.h2 == Some(true) {
            self.last_activity = Instant::now();
        } else if self.head_started.is_none() && self.conn.in_flight.load(Relaxed) == 0 {
            self.head_started = Some(Instant::now());
        }
    }

    /// The phase and deadline now.
    fn deadline(&self, now: Instant) -> (Phase, Instant) {
        // A tunnel is governed by its own idle timeout.
        if self.conn.in_flight.load(Relaxed) > 0 || self.conn.facts.tunnels_open() {
            return match self.armed {
                Some((Phase::Busy, at)) if at > now => (Phase::Busy, at),
                _ => (Phase::Busy, now + self.idle),
            };
        }
        match self.head_started {
            Some(at) if self.h2 != Some(true) => (Phase::Head, at + self.head),
            _ => (Phase::Idle, self.last_activity + self.idle),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Timed<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let started = this.conn.requests_started.load(Relaxed);
        if started != this.seen {
            this.seen = started;
            this.head_started = None;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.on_bytes(&buf.filled()[before..]);
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        loop {
            let now = Instant::now();
            let (phase, at) = this.deadline(now);
            if phase != Phase::Busy && at <= now {
                this.armed = None;
                return if phase == Phase::Head {
                    count_answer(Answer::HeaderTimeout);
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head not received in time")))
                } else {
                    // Seen by hyper as the client closing an idle connection.
                    GLOBAL.idle_closed.fetch_add(1, Relaxed);
                    Poll::Ready(Ok(()))
                };
            }
            if this.armed != Some((phase, at)) {
                this.sleep.as_mut().reset(at);
                this.armed = Some((phase, at));
            }
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The timer went off: look again (a busy connection re-arms, an expired one closes).
            this.armed = None;
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Timed<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last_activity = Instant::now();
        }
        r
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last_activity = Instant::now();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
