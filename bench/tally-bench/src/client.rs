//! A minimal Socket.IO v5 client over WebSocket, just enough for load tests.
//!
//! It speaks engine.io v4 directly (no long-polling, no upgrade): open the
//! WebSocket, wait for the engine `open` packet, join namespace `/`, answer
//! pings, send `click` with an ack id, and read `count` totals and acks. Incoming
//! frames are inspected in place as `&str`; only the total is parsed out of
//! them, because a load generator that parses JSON per frame measures itself.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a server may take from TCP connect to namespace join before it
/// is declared not to speak Socket.IO (a server that accepts and stays mute
/// would otherwise hang the run).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Read buffer per connection: a few frames' worth (see `handshake`).
const READ_BUFFER: usize = 4096;

/// What can go wrong talking to the server under test.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url} (is a server listening there?): {source}")]
    Connect {
        url: String,
        #[source]
        source: tokio_tungstenite::tungstenite::Error,
    },
    #[error("{0} is not a Socket.IO server (v5 over WebSocket): {1}")]
    NotSocketIo(String, String),
    #[error("the server refused the connection: {0}")]
    Refused(String),
    #[error("connection lost: {0}")]
    Lost(String),
}

/// A frame from the server, as far as the load tool cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// A `count` event with its total.
    Count(u64),
    /// The ack of the click with this id, with its total.
    Ack { id: u64, total: u64 },
    /// An ack without a total (of `join_conversation` or `message`), and
    /// whether it is an error.
    Reply { id: u64, error: bool },
    /// A chat `message` sent by this tool: the number in its content
    /// (`bench <n>`).
    Message(u64),
    /// Anything else (pings are answered before they get here).
    Other,
}

/// One connected Socket.IO client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_ack: u64,
}

/// The WebSocket URL of the Socket.IO endpoint of an `http://host:port` base.
pub fn socket_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let ws = base
        .strip_prefix("http://")
        .map(|rest| format!("ws://{rest}"))
        .or_else(|| {
            base.strip_prefix("https://")
                .map(|rest| format!("wss://{rest}"))
        })
        .unwrap_or_else(|| base.to_string());
    format!("{ws}/socket.io/?EIO=4&transport=websocket")
}

impl Client {
    /// Opens the WebSocket and joins namespace `/`. Returns once the server
    /// accepted the namespace connection (its `40{"sid":…}`): a contract
    /// server buffers nothing for a client that emits before that.
    pub async fn connect(base: &str) -> Result<Self, ClientError> {
        Self::connect_as(base, None).await
    }

    /// Connects and joins namespace `/`, as `username` (open mode's bare
    /// name in the handshake's `auth`) when given.
    pub async fn connect_as(base: &str, username: Option<&str>) -> Result<Self, ClientError> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, Self::handshake(base, username))
            .await
            .map_err(|_| {
                ClientError::NotSocketIo(
                    base.to_string(),
                    format!("no Socket.IO handshake within {HANDSHAKE_TIMEOUT:?}"),
                )
            })?
    }

    async fn handshake(base: &str, username: Option<&str>) -> Result<Self, ClientError> {
        use tokio_tungstenite::tungstenite::Error;
        let url = socket_url(base);
        // Nagle off, as browsers and socket.io clients do, so small frames
        // are not held back and measured as server latency.
        // Frames of this contract are tens of bytes. tungstenite zero-fills
        // its whole read buffer (128 KiB by default) before every read, which
        // profiled as 37% of the tool's CPU in fanout: a small buffer keeps
        // the tool from measuring its own memset.
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config), true)
            .await
            .map_err(|source| match source {
                // Something answered, but not with a WebSocket upgrade.
                Error::Http(response) => ClientError::NotSocketIo(
                    base.to_string(),
                    format!("HTTP {} to the WebSocket handshake", response.status()),
                ),
                Error::HttpFormat(err) => ClientError::NotSocketIo(
                    base.to_string(),
                    format!("not an HTTP answer ({err})"),
                ),
                Error::Protocol(err) => {
                    ClientError::NotSocketIo(base.to_string(), format!("not a WebSocket ({err})"))
                }
                source => ClientError::Connect {
                    url: url.clone(),
                    source,
                },
            })?;
        Self::join(ws, base, username).await
    }

    /// Connects like [`Client::connect`], with a receive buffer of about
    /// `recv_buffer` bytes: a client that then stops reading fills it after a
    /// few frames, as a stalled phone on a bad network would.
    pub async fn connect_with_recv_buffer(
        base: &str,
        recv_buffer: u32,
    ) -> Result<Self, ClientError> {
        let url = socket_url(base);
        let lost = |e: std::io::Error| ClientError::Lost(e.to_string());
        let authority = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| {
                ClientError::NotSocketIo(base.to_string(), "no host in the URL".into())
            })?;
        let addr = tokio::net::lookup_host(authority)
            .await
            .map_err(lost)?
            .next()
            .ok_or_else(|| ClientError::NotSocketIo(base.to_string(), "no address".into()))?;
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(lost)?;
        socket.set_recv_buffer_size(recv_buffer).map_err(lost)?;
        let stream = socket.connect(addr).await.map_err(lost)?;
        stream.set_nodelay(true).map_err(lost)?;
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url.as_str(),
            MaybeTlsStream::Plain(stream),
            Some(config),
        )
        .await
        .map_err(|source| ClientError::Connect {
            url: url.clone(),
            source,
        })?;
        tokio::time::timeout(HANDSHAKE_TIMEOUT, Self::join(ws, base, None))
            .await
            .map_err(|_| {
                ClientError::NotSocketIo(
                    base.to_string(),
                    format!("no Socket.IO handshake within {HANDSHAKE_TIMEOUT:?}"),
                )
            })?
    }

    /// Reads engine.io's `open`, joins namespace `/` and waits for its answer.
    async fn join(
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
        base: &str,
        username: Option<&str>,
    ) -> Result<Self, ClientError> {
        let mut client = Client { ws, next_ack: 0 };
        let open = client.next_text().await?;
        if !open.starts_with("0{") {
            return Err(ClientError::NotSocketIo(
                base.to_string(),
                format!("first frame {open:?} is no engine.io open packet"),
            ));
        }
        let connect = match username {
            Some(name) => format!("40{}", serde_json::json!({ "username": name })),
            None => "40".to_string(),
        };
        client.send(&connect).await?;
        loop {
            let frame = client.next_text().await?;
            if frame.starts_with("40") {
                return Ok(client);
            }
            if let Some(error) = frame.strip_prefix("44") {
                return Err(ClientError::Refused(error.to_string()));
            }
        }
    }

    async fn send(&mut self, text: &str) -> Result<(), ClientError> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| ClientError::Lost(e.to_string()))
    }

    /// The next text frame, answering engine.io pings on the way.
    async fn next_text(&mut self) -> Result<String, ClientError> {
        loop {
            let message = self
                .ws
                .next()
                .await
                .ok_or_else(|| ClientError::Lost("closed by the server".into()))?
                .map_err(|e| ClientError::Lost(e.to_string()))?;
            match message {
                Message::Text(text) if text.as_str() == "2" => self.send("3").await?,
                Message::Text(text) => return Ok(text.as_str().to_string()),
                Message::Close(_) => return Err(ClientError::Lost("closed by the server".into())),
                _ => {}
            }
        }
    }

    /// Sends a `click` asking for an ack; returns the ack id.
    pub async fn click(&mut self) -> Result<u64, ClientError> {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send(&format!("42{id}[\"click\"]")).await?;
        Ok(id)
    }

    /// Emits `event` with a JSON payload, asking for an ack; returns the ack id.
    pub async fn emit(
        &mut self,
        event: &str,
        payload: &serde_json::Value,
    ) -> Result<u64, ClientError> {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send(&format!("42{id}{}", serde_json::json!([event, payload])))
            .await?;
        Ok(id)
    }

    /// The next interesting frame.
    pub async fn recv(&mut self) -> Result<Incoming, ClientError> {
        loop {
            let message = self
                .ws
                .next()
                .await
                .ok_or_else(|| ClientError::Lost("closed by the server".into()))?
                .map_err(|e| ClientError::Lost(e.to_string()))?;
            match message {
                Message::Text(text) if text.as_str() == "2" => self.send("3").await?,
                Message::Text(text) => return Ok(parse(text.as_str())),
                Message::Close(_) => return Err(ClientError::Lost("closed by the server".into())),
                _ => {}
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        self.ws.close(None).await.ok();
    }
}

/// The content of the chat messages this tool sends: `bench <n>`.
pub const MESSAGE_PREFIX: &str = "bench ";

/// Reads a Socket.IO frame without allocating: `42["count",{"total":N}]`,
/// `42["message",{…"content":"bench N"…}]` or `43<id>[{…}]`.
pub fn parse(frame: &str) -> Incoming {
    if let Some(event) = frame.strip_prefix("42") {
        if event.starts_with("[\"count\"")
            && let Some(total) = total_in(event)
        {
            return Incoming::Count(total);
        }
        if event.starts_with("[\"message\"")
            && let Some(n) = number_after(event, "\"content\":\"bench ")
        {
            return Incoming::Message(n);
        }
    } else if let Some(ack) = frame.strip_prefix("43") {
        let digits = ack.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(id) = ack[..digits].parse() else {
            return Incoming::Other;
        };
        let body = &ack[digits..];
        return match total_in(body) {
            Some(total) if !body.starts_with("[{\"conversationId\"") => Incoming::Ack { id, total },
            _ => Incoming::Reply {
                id,
                error: body.starts_with("[{\"error\""),
            },
        };
    }
    Incoming::Other
}

fn number_after(json: &str, key: &str) -> Option<u64> {
    let rest = &json[json.find(key)? + key.len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

fn total_in(json: &str) -> Option<u64> {
    number_after(json, "\"total\":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_in_place() {
        assert_eq!(parse(r#"42["count",{"total":42}]"#), Incoming::Count(42));
        assert_eq!(
            parse(r#"4317[{"total":9,"you":null}]"#),
            Incoming::Ack { id: 17, total: 9 }
        );
        assert_eq!(parse(r#"42["leaderboard",[]]"#), Incoming::Other);
        assert_eq!(
            parse(r#"43[{"total":1}]"#),
            Incoming::Other,
            "an ack needs an id"
        );
        assert_eq!(parse("3"), Incoming::Other);
        assert_eq!(
            parse(
                r#"42["message",{"type":"message","conversationId":"c","userId":"m1","content":"bench 12","messageId":"x"}]"#
            ),
            Incoming::Message(12)
        );
        assert_eq!(
            parse(r#"435[{"messageId":"x","timestamp":"t"}]"#),
            Incoming::Reply {
                id: 5,
                error: false
            }
        );
        assert_eq!(
            parse(r#"436[{"conversationId":"c","total":3,"online":2,"history":[]}]"#),
            Incoming::Reply {
                id: 6,
                error: false
            },
            "a join ack carries a total but is no click ack"
        );
        assert_eq!(
            parse(r#"437[{"error":{"code":"x","message":"y"}}]"#),
            Incoming::Reply { id: 7, error: true }
        );
    }

    #[test]
    fn urls_point_at_the_websocket_endpoint() {
        assert_eq!(
            socket_url("http://127.0.0.1:3000/"),
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket"
        );
    }
}
