//! HTTP/2 streams run on their connection's task rather than each as a task
//! of its own. hyper hands every new stream to its executor; this executor
//! keeps the streams a connection starts in a set that the connection's driver
//! polls next to the connection itself, as HAProxy and Envoy handle a
//! connection's streams on one thread. It saves a task per request (its
//! allocation, scheduling and the wake-ups between the stream and the
//! connection) and a copy of the request future into it.
//!
//! The executor is a unit type shared by every connection: while a driver
//! polls its connection, a thread-local flag routes `execute` into that
//! driver's queue (hyper only starts streams from inside that poll). Outside
//! a driver's poll it falls back to `tokio::spawn`.

use futures_util::stream::{FuturesUnordered, StreamExt};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    static DRIVING: Cell<bool> = const { Cell::new(false) };
    static STARTED: RefCell<Vec<Stream>> = const { RefCell::new(Vec::new()) };
}

/// The executor given to hyper's connection builder.
#[derive(Clone, Copy, Debug, Default)]
pub struct InPlace;

impl<F> hyper::rt::Executor<F> for InPlace
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        if DRIVING.get() {
            STARTED.with(|s| s.borrow_mut().push(Box::pin(fut)));
        } else {
            tokio::spawn(fut);
        }
    }
}

/// Resets the flag even if the connection's poll panics.
struct Driving;

impl Drop for Driving {
    fn drop(&mut self) {
        DRIVING.set(false);
    }
}

/// The streams of one connection.
#[derive(Default)]
pub struct Streams {
    set: FuturesUnordered<Stream>,
}

impl Streams {
    /// Polls `conn`, then the streams it started and the ones still running.
    /// Streams left when the connection ends are dropped with it.
    pub fn poll<C: Future>(&mut self, mut conn: Pin<&mut C>, cx: &mut Context<'_>) -> Poll<C::Output> {
        loop {
            let done = {
                DRIVING.set(true);
                let _reset = Driving;
                conn.as_mut().poll(cx)
            };
            let started = STARTED.with(|s| {
                let mut s = s.borrow_mut();
                let n = s.len();
                self.set.extend(s.drain(..));
                n
            });
            while let Poll::Ready(Some(())) = self.set.poll_next_unpin(cx) {}
            if done.is_ready() || started == 0 {
                return done;
            }
            // New streams ran: what they wrote is for the connection to send now.
        }
    }
}
