//! Respond: every answer the proxy gives itself (rather than an upstream's) is
//! built here, and each one is counted in `ringmaster_local_answers_total` by
//! its reason. Phases return these; none builds its own error response.

use crate::body::Body;
use crate::metrics::{count_answer, Answer};
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use http::{Response, StatusCode};

/// A short plain-text answer, counted by reason.
pub fn answer(status: StatusCode, why: Answer, text: &'static str) -> Response<Body> {
    build(status, why, Body::Full(Some(Bytes::from_static(text.as_bytes()))), "text/plain; charset=utf-8")
}

/// A plain-text answer made for this request.
pub fn answer_text(status: StatusCode, why: Answer, text: String) -> Response<Body> {
    build(status, why, Body::full(text), "text/plain; charset=utf-8")
}

/// A JSON answer (a body of one line, newline-terminated).
pub fn answer_json(status: StatusCode, why: Answer, value: serde_json::Value) -> Response<Body> {
    build(status, why, Body::full(value.to_string() + "\n"), "application/json")
}

/// A 308 to `location` (plain HTTP sent to HTTPS).
pub fn redirect(location: &str) -> Response<Body> {
    count_answer(Answer::RedirectHttps);
    let mut r = Response::new(Body::Empty);
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

fn build(status: StatusCode, why: Answer, body: Body, content_type: &'static str) -> Response<Body> {
    count_answer(why);
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::GLOBAL;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn every_answer_is_counted_by_its_reason() {
        let before = GLOBAL.answers[Answer::PurgeForbidden as usize].load(Relaxed);
        let r = answer(StatusCode::FORBIDDEN, Answer::PurgeForbidden, "no\n");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
        let r = answer_json(StatusCode::FORBIDDEN, Answer::PurgeForbidden, serde_json::json!({"a": 1}));
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(GLOBAL.answers[Answer::PurgeForbidden as usize].load(Relaxed), before + 2);
        let r = redirect("https://a.test/x");
        assert_eq!((r.status(), r.headers()[LOCATION].to_str().unwrap()), (StatusCode::PERMANENT_REDIRECT, "https://a.test/x"));
    }
}
