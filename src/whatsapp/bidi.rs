//! A WebDriver BiDi connection to chromedriver: the page pushes its events
//! instead of being polled for them.
//!
//! A classic session created with the capability `webSocketUrl: true`
//! answers with a `ws://…/session/{id}` URL (W3C WebDriver BiDi, "Establishing
//! a Connection"). Over it the daemon installs the page adapter as a preload
//! script (`script.addPreloadScript`), whose `channel` argument turns into a
//! function the page calls; each call arrives here as a `script.message`
//! event. [`Bidi`] sends commands and matches their answers by `id`; the
//! events it cares about come out of the receiver [`Bidi::connect`] returns,
//! as [`BidiEvent`]s, in the order chromedriver sent them.
//!
//! Measured with chromedriver 156: a renderer that dies is reported as the
//! CDP event `Inspector.targetCrashed`, which chromedriver's BiDi forwards as
//! `goog:cdp.Inspector.targetCrashed` (about 20 ms after the kill), naming
//! the CDP session of the tab whose renderer died (`params.session`, the
//! one `goog:cdp.getSession` answers for that tab's browsing context; it
//! stays the same across the tab's navigations); a browser
//! or chromedriver that dies closes the WebSocket at once. chromedriver runs
//! its BiDi "mapper" in a hidden tab of the same browser: when every renderer
//! dies at once the mapper goes too and the connection stays open but mute,
//! which only a classic command notices.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// The name of the channel the adapter's messages arrive on.
pub const CHANNEL: &str = "wasup";

/// Events the Session listens to: the adapter's channel, a renderer crash
/// (CDP, as chromedriver forwards it) and navigations of the page.
pub const SUBSCRIBED: [&str; 3] = ["script.message", "goog:cdp.Inspector.targetCrashed", "browsingContext.navigationStarted"];

/// How many events may wait for the Session before chromedriver's socket is
/// no longer read. Nothing is dropped then: what follows queues up in
/// chromedriver and the socket (command answers behind it, so a command may
/// time out) until the Session catches up.
const EVENT_BUFFER: usize = 1024;

/// Something the browser pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BidiEvent {
    /// A message the adapter sent through its channel (a JSON text: a
    /// `{loading, logout}` notice or an `{events, snap}` batch).
    Page(String),
    /// A renderer crashed: the CDP session of its tab, when the event
    /// names one (see [`crate::whatsapp::page::Page::own_crash`]).
    Crashed(Option<String>),
    /// A navigation started in the page, to this URL.
    Navigation(String),
    /// The connection is gone (closed, or a read failed): why. Nothing
    /// follows.
    Closed(String),
}

/// Why a BiDi command failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BidiError {
    /// The remote end answered with an error (`error`: the BiDi error code).
    #[error("{method}: {error}: {message}")]
    Failed { method: String, error: String, message: String },
    /// No answer within the time given.
    #[error("{0}: no answer in time")]
    Timeout(String),
    /// The connection is gone.
    #[error("the BiDi connection is closed")]
    Closed,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, BidiError>>>>>;

/// One BiDi connection. Dropping the last clone closes it.
pub struct Bidi {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: AtomicU64,
}

impl Bidi {
    /// Connects to `url` (the `webSocketUrl` chromedriver answered) and
    /// starts reading. The receiver yields what the browser pushes, ending
    /// with one [`BidiEvent::Closed`].
    ///
    /// Errors: the WebSocket handshake failed (text of the failure).
    pub async fn connect(url: &str) -> Result<(Bidi, mpsc::Receiver<BidiEvent>), String> {
        let (socket, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| format!("BiDi connect: {e}"))?;
        let (mut sink, mut stream) = socket.split();
        let (out, mut outgoing) = mpsc::unbounded_channel::<Message>();
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        let pending: Pending = Arc::default();

        // The writer ends when the last sender (the Bidi) is dropped, and
        // then closes the socket.
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                if sink.send(message).await.is_err() {
                    return;
                }
            }
            // Closing a socket that already failed: nothing left to tell.
            let _ = sink.close().await;
        });

        let answers = pending.clone();
        tokio::spawn(async move {
            let why = loop {
                let message = match stream.next().await {
                    None => break "the connection was closed".to_string(),
                    Some(Err(e)) => break format!("read failed: {e}"),
                    Some(Ok(Message::Close(frame))) => {
                        break format!(
                            "closed by the remote end{}",
                            frame.map(|f| format!(": {} {}", f.code, f.reason)).unwrap_or_default()
                        )
                    }
                    Some(Ok(Message::Text(text))) => text,
                    // Pings are answered by tungstenite; nothing else is sent.
                    Some(Ok(_)) => continue,
                };
                let Ok(value) = serde_json::from_str::<Value>(&message) else { continue };
                if let Some(id) = value.get("id").and_then(Value::as_u64) {
                    let waiter = answers.lock().ok().and_then(|mut p| p.remove(&id));
                    if let Some(waiter) = waiter {
                        // The command's caller may have given up (timeout):
                        // then nobody needs the answer.
                        let _ = waiter.send(answer(&value));
                    }
                    continue;
                }
                if let Some(event) = event(&value) {
                    if events.send(event).await.is_err() {
                        // The Session is gone: stop reading.
                        return;
                    }
                }
            };
            if let Ok(mut waiting) = answers.lock() {
                waiting.clear();
            }
            // The Session may be gone already; then nobody needs to know.
            let _ = events.send(BidiEvent::Closed(why)).await;
        });

        Ok((Bidi { out, pending, next_id: AtomicU64::new(1) }, receiver))
    }

    /// Sends `method` with `params` and waits at most `within` for its
    /// result.
    pub async fn command(&self, method: &str, params: Value, within: Duration) -> Result<Value, BidiError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().map_err(|_| BidiError::Closed)?.insert(id, tx);
        let text = json!({"id": id, "method": method, "params": params}).to_string();
        if self.out.send(Message::text(text)).is_err() {
            return Err(BidiError::Closed);
        }
        let result = tokio::time::timeout(within, rx).await;
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&id);
        }
        match result {
            Ok(Ok(answer)) => answer.map_err(|e| match e {
                BidiError::Failed { error, message, .. } => BidiError::Failed { method: method.to_string(), error, message },
                other => other,
            }),
            Ok(Err(_)) => Err(BidiError::Closed),
            Err(_) => Err(BidiError::Timeout(method.to_string())),
        }
    }
}

impl Bidi {
    /// Closes the connection from this end (the reader then reports
    /// [`BidiEvent::Closed`]). False if it was closed already.
    pub fn close(&self) -> bool {
        self.out.send(Message::Close(None)).is_ok()
    }
}

/// A command's answer: its `result`, or the error it carries.
fn answer(value: &Value) -> Result<Value, BidiError> {
    if value.get("type").and_then(Value::as_str) == Some("error") {
        let text = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        return Err(BidiError::Failed { method: String::new(), error: text("error"), message: text("message") });
    }
    Ok(value.get("result").cloned().unwrap_or(Value::Null))
}

/// The [`BidiEvent`] an event message stands for, if it is one the Session
/// listens to.
fn event(value: &Value) -> Option<BidiEvent> {
    let params = value.get("params")?;
    match value.get("method")?.as_str()? {
        "script.message" if params.get("channel").and_then(Value::as_str) == Some(CHANNEL) => {
            let data = params.get("data")?;
            (data.get("type").and_then(Value::as_str) == Some("string"))
                .then(|| data.get("value").and_then(Value::as_str).map(|s| BidiEvent::Page(s.to_string())))
                .flatten()
        }
        "goog:cdp.Inspector.targetCrashed" => Some(BidiEvent::Crashed(params.get("session").and_then(Value::as_str).map(str::to_string))),
        "browsingContext.navigationStarted" if params.get("context").is_some() => {
            Some(BidiEvent::Navigation(params.get("url").and_then(Value::as_str).unwrap_or("").to_string()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_as_chromedriver_sends_them() {
        // Shapes copied from chromedriver 156's answers on this project's
        // simulator page.
        let message = json!({"method": "script.message", "type": "event", "params": {
            "channel": "wasup", "data": {"type": "string", "value": "{\"loading\":true}"},
            "source": {"context": "3A60", "realm": "-1.-2", "userContext": "default"}}});
        assert_eq!(event(&message), Some(BidiEvent::Page("{\"loading\":true}".into())));
        let other_channel =
            json!({"method": "script.message", "type": "event", "params": {"channel": "x", "data": {"type": "string", "value": "1"}}});
        assert_eq!(event(&other_channel), None);
        let not_a_string =
            json!({"method": "script.message", "type": "event", "params": {"channel": "wasup", "data": {"type": "number", "value": 1}}});
        assert_eq!(event(&not_a_string), None);
        let crash = json!({"method": "goog:cdp.Inspector.targetCrashed", "type": "event", "params": {"event": "Inspector.targetCrashed", "params": {}, "session": "92B2"}});
        assert_eq!(event(&crash), Some(BidiEvent::Crashed(Some("92B2".into()))));
        let unnamed = json!({"method": "goog:cdp.Inspector.targetCrashed", "type": "event", "params": {"event": "Inspector.targetCrashed", "params": {}}});
        assert_eq!(event(&unnamed), Some(BidiEvent::Crashed(None)));
        let nav = json!({"method": "browsingContext.navigationStarted", "type": "event", "params": {"context": "3A60", "navigation": "bbc1", "timestamp": 1, "url": "http://127.0.0.1:9566/"}});
        assert_eq!(event(&nav), Some(BidiEvent::Navigation("http://127.0.0.1:9566/".into())));
    }

    #[test]
    fn answers_carry_results_or_errors() {
        assert_eq!(answer(&json!({"id": 1, "type": "success", "result": {"script": "a"}})).unwrap(), json!({"script": "a"}));
        let err = answer(&json!({"id": 2, "type": "error", "error": "invalid argument", "message": "bad"})).unwrap_err();
        assert!(matches!(err, BidiError::Failed { ref error, .. } if error == "invalid argument"), "{err:?}");
    }
}
