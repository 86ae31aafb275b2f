//! JSON bodies for the errors actix-http's HTTP/1 codec answers itself.
//!
//! A request line or head it cannot parse (400), a head with too many
//! headers or over its buffer (431) and a head not sent within
//! `client_request_timeout` (408) never reach the app or its middleware:
//! actix-http 3 writes a fixed, empty-bodied response and closes the
//! connection (`h1/dispatcher.rs`, `Response::bad_request().drop_body()`
//! and friends). [`JsonCodecErrors`] wraps each accepted connection and
//! replaces exactly those responses with the same status, the API's
//! headers and `{"error": "..."}`.
//!
//! A write is replaced only when it is, as a whole, one response head with
//! status 400, 408 or 431 whose headers are exactly `content-length: 0`,
//! `connection: close` and `date`: every response the app writes carries
//! `x-content-type-options` (`headers_and_json_errors`), so none matches.
//! A codec error written behind another response still in the buffer
//! (a pipelining client) keeps its empty body.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a client has to send a request head (actix-http's
/// `client_request_timeout`, its default): then 408.
pub const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The connection wrapper: reads pass through; writes pass through except
/// the codec's own error responses, which are replaced (see the module).
pub struct JsonCodecErrors<T> {
    io: T,
    /// A replacement still being written, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> JsonCodecErrors<T> {
    /// Wraps an accepted connection.
    pub fn new(io: T) -> Self {
        Self { io, pending: None }
    }
}

/// What each codec error means to a client, for the JSON body.
fn message(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "malformed HTTP request: the request line or a header could not be parsed",
        408 => "request head not received in time (5 s)",
        431 => "request head too large: at most 96 headers and 128 KiB of head",
        _ => return None,
    })
}

/// The replacement for `written`, when it is exactly one of the codec's
/// empty-bodied error heads; else `None`.
pub fn replacement(written: &[u8]) -> Option<Vec<u8>> {
    // The codec's heads are about 100 bytes; bodies are never looked at.
    if written.len() > 512 || !written.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let head = std::str::from_utf8(written).ok()?.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let message = message(status)?;
    let mut date = None;
    let (mut empty, mut close) = (false, false);
    for line in lines {
        let (name, value) = line.split_once(": ")?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" if value == "0" && !empty => empty = true,
            "connection" if value.eq_ignore_ascii_case("close") && !close => close = true,
            "date" if date.is_none() => date = Some(value),
            _ => return None,
        }
    }
    if !(empty && close) {
        return None;
    }
    let body = serde_json::json!({ "error": message }).to_string();
    let mut out = format!(
        "{status_line}\r\ncontent-length: {}\r\ncontent-type: application/json\r\nx-content-type-options: nosniff\r\ncache-control: no-store\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(date) = date {
        out.push_str(&format!("date: {date}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<T: AsyncWrite + Unpin> JsonCodecErrors<T> {
    /// Writes what is left of a replacement; `Ready(Ok)` once none is left.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            if *done == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonCodecErrors<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonCodecErrors<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drive(cx))?;
        if let Some(bytes) = replacement(buf) {
            this.pending = Some((bytes, 0));
            // The caller's bytes count as written; the replacement goes
            // out here and on the flushes that follow.
            if let Poll::Ready(Err(e)) = this.drive(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drive(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drive(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Sat, 21 Nov 2026 19:50:30 GMT";

    #[test]
    fn the_codecs_error_heads_get_a_json_body() {
        for (status, reason) in [(400, "Bad Request"), (408, "Request Timeout"), (431, "Request Header Fields Too Large")] {
            let head = format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n{DATE}\r\n\r\n");
            let out = String::from_utf8(replacement(head.as_bytes()).expect("replaced")).unwrap();
            let (head, body) = out.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} {reason}\r\n")));
            assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
            assert!(head.contains("content-type: application/json") && head.contains("x-content-type-options: nosniff"));
            assert!(head.ends_with(DATE));
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }

    #[test]
    fn app_responses_pass_unchanged() {
        let not = [
            // The app's own 400: it carries its body and API headers.
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\nx-content-type-options: nosniff\r\n{DATE}\r\n\r\n{{\"error\":1}}"),
            // A head with a body behind it in the same write.
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n{DATE}\r\n\r\nmore"),
            // Another status, or a keep-alive empty answer.
            format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n{DATE}\r\n\r\n"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"),
            // A response behind an earlier one.
            format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nHTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n{DATE}\r\n\r\n"),
            String::new(),
        ];
        for w in not {
            assert!(replacement(w.as_bytes()).is_none(), "{w:?}");
        }
    }
}
