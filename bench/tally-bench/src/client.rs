//! A minimal Socket.IO v5 client over WebSocket, just enough for load tests.
//!
//! It speaks engine.io v4 directly (no long-polling, no upgrade): open the
//! WebSocket, wait for the engine `open` packet, join namespace `/`, answer
//! pings, send `click` with an ack id, and read `count` totals and acks. Incoming
//! frames are inspected in place as `&str`; only the total is parsed out of
//! them, because a load generator that parses JSON per frame measures itself.

use std::net::{IpAddr, SocketAddr};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
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
    #[error("the WebSocket handshake with {url} failed: {source}")]
    Connect {
        url: String,
        #[source]
        source: tokio_tungstenite::tungstenite::Error,
    },
    #[error("cannot connect to {url} (is a server listening there?): {source}")]
    Tcp {
        url: String,
        #[source]
        source: std::io::Error,
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

/// How one connection is opened; the default is a guest from whatever
/// address the OS picks.
#[derive(Debug, Clone, Default)]
pub struct Dial {
    /// Sign in as this user (open mode's bare `username` in the handshake's
    /// `auth`).
    pub username: Option<String>,
    /// Connect from this local address, e.g. a loopback alias such as
    /// 127.0.0.2: one address has only so many ephemeral ports, and servers
    /// cap the connections of one address.
    pub source: Option<IpAddr>,
    /// Ask for a receive buffer of about this many bytes: a client that then
    /// stops reading fills it after a few frames, as a stalled phone on a
    /// bad network would.
    pub recv_buffer: Option<u32>,
}

impl Client {
    /// Opens the WebSocket and joins namespace `/`. Returns once the server
    /// accepted the namespace connection (its `40{"sid":…}`): a contract
    /// server buffers nothing for a client that emits before that.
    pub async fn connect(base: &str) -> Result<Self, ClientError> {
        Self::dial(base, &Dial::default()).await
    }

    /// Connects as `how` says and joins namespace `/`.
    pub async fn dial(base: &str, how: &Dial) -> Result<Self, ClientError> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, Self::handshake(base, how))
            .await
            .map_err(|_| {
                ClientError::NotSocketIo(
                    base.to_string(),
                    format!("no Socket.IO handshake within {HANDSHAKE_TIMEOUT:?}"),
                )
            })?
    }

    async fn handshake(base: &str, how: &Dial) -> Result<Self, ClientError> {
        use tokio_tungstenite::tungstenite::Error;
        let url = socket_url(base);
        let stream = Self::open_tcp(&url, how)
            .await
            .map_err(|source| ClientError::Tcp {
                url: url.clone(),
                source,
            })?;
        // Frames of this contract are tens of bytes. tungstenite zero-fills
        // its whole read buffer (128 KiB by default) before every read, which
        // profiled as 37% of the tool's CPU in fanout: a small buffer keeps
        // the tool from measuring its own memset.
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url.as_str(),
            MaybeTlsStream::Plain(stream),
            Some(config),
        )
        .await
        .map_err(|source| match source {
            // Over a connection cap: what a script opening too many sockets sees.
            Error::Http(response) if response.status() == 503 => ClientError::Refused(format!(
                "HTTP 503 {}",
                response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
            )),
            // Something answered, but not with a WebSocket upgrade.
            Error::Http(response) => ClientError::NotSocketIo(
                base.to_string(),
                format!("HTTP {} to the WebSocket handshake", response.status()),
            ),
            Error::HttpFormat(err) => {
                ClientError::NotSocketIo(base.to_string(), format!("not an HTTP answer ({err})"))
            }
            Error::Protocol(err) => {
                ClientError::NotSocketIo(base.to_string(), format!("not a WebSocket ({err})"))
            }
            source => ClientError::Connect {
                url: url.clone(),
                source,
            },
        })?;
        Self::join(ws, base, how.username.as_deref()).await
    }

    /// The TCP connection under the WebSocket, from `how.source` with
    /// `how.recv_buffer`, and with Nagle off, as browsers and socket.io
    /// clients do, so small frames are not held back and measured as
    /// server latency.
    async fn open_tcp(url: &str, how: &Dial) -> std::io::Result<TcpStream> {
        use std::io::{Error, ErrorKind};
        let authority = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "no host in the URL"))?;
        let addr = tokio::net::lookup_host(authority)
            .await?
            .next()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "the host has no address"))?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }?;
        if let Some(size) = how.recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        if let Some(source) = how.source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
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
                // The server left the namespace (`41`) or closed the session
                // (`1`): nothing more will be answered.
                Message::Text(text) if matches!(text.as_str(), "41" | "1") => {
                    return Err(ClientError::Lost("disconnected by the server".into()));
                }
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
