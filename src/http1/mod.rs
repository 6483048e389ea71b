//! HTTP/1.1 of our own, for a forwarding path where one task drives a
//! request end to end (issue 23): request and response heads parsed with
//! `httparse` and checked as RFC 9112 asks of a proxy ([`head`]), exact body
//! framing ([`chunked`]), heads and bodies read off a connection ([`read`],
//! [`body`]), and heads and chunks written back ([`write`]). Only `read` and
//! `body` touch a connection; every other rule works on bytes alone, and is
//! tested so.

pub mod body;
pub mod chunked;
pub mod client;
pub mod head;
pub mod read;
pub mod server;
pub mod write;

#[cfg(test)]
mod differential_tests;
