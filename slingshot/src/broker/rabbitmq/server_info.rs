//! Which RabbitMQ a service talks to: the product, version and platform a node announces when an AMQP connection opens (`connection.start`), read on a short connection of its own, since lapin keeps none of it.
//!
//! The connection is a complete, polite one (start, tune, open, close), so
//! the broker logs it as any short-lived client and never as a connection
//! that broke off mid-handshake.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a broker says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `RabbitMQ`.
    pub product: String,
    /// `4.0.5`, `3.10.8`...
    pub version: String,
    /// The runtime it runs on: `Erlang/OTP 27.3.4.1`.
    pub platform: String,
}

impl ServerInfo {
    /// The major version (`4` of `4.0.5`), if the version starts with a number.
    pub fn major(&self) -> Option<u32> {
        self.version.split('.').next()?.parse().ok()
    }
}

impl std::fmt::Display for ServerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.product, self.version)?;
        if !self.platform.is_empty() {
            write!(f, " ({})", self.platform)?;
        }
        Ok(())
    }
}

/// Why the broker's announcement could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum ServerInfoError {
    /// The URL is not an `amqp://` URL this reader can follow (`amqps://`
    /// needs TLS, which it does not speak).
    #[error("cannot read the server's version from this URL: {0}")]
    Url(String),
    /// The connection failed or the broker said something unexpected.
    #[error("reading the server's version: {0}")]
    Connection(String),
}

const FRAME_METHOD: u8 = 1;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
const CONNECTION: u16 = 10;
const START: u16 = 10;
const START_OK: u16 = 11;
const TUNE: u16 = 30;
const TUNE_OK: u16 = 31;
const OPEN: u16 = 40;
const OPEN_OK: u16 = 41;
const CLOSE: u16 = 50;
const CLOSE_OK: u16 = 51;
/// The largest frame accepted while reading: `connection.start` of RabbitMQ
/// is about 500 bytes.
const MAX_FRAME: u32 = 64 * 1024;

/// Opens a connection to `uri`, reads what the broker announces, and closes
/// it, all within `timeout`.
pub(crate) async fn read_uri(uri: &lapin::uri::AMQPUri, timeout: Duration) -> Result<ServerInfo, ServerInfoError> {
    if uri.scheme != lapin::uri::AMQPScheme::AMQP {
        return Err(ServerInfoError::Url("only amqp:// is supported".into()));
    }
    match tokio::time::timeout(timeout, handshake(uri)).await {
        Ok(result) => result.map_err(ServerInfoError::Connection),
        Err(_) => Err(ServerInfoError::Connection(format!("no answer within {timeout:?}"))),
    }
}

async fn handshake(uri: &lapin::uri::AMQPUri) -> Result<ServerInfo, String> {
    let authority = &uri.authority;
    let mut stream = TcpStream::connect((authority.host.as_str(), authority.port))
        .await
        .map_err(|e| format!("{}:{}: {e}", authority.host, authority.port))?;
    stream
        .write_all(b"AMQP\x00\x00\x09\x01")
        .await
        .map_err(|e| e.to_string())?;
    let start = expect(&mut stream, START).await?;
    let info = parse_start(&start)?;

    let mut properties = Vec::new();
    string_entry(&mut properties, "product", "slingshot");
    string_entry(&mut properties, "connection_name", "slingshot version check");
    let mut start_ok = Vec::new();
    long_bytes(&mut start_ok, &properties);
    short_string(&mut start_ok, "PLAIN")?;
    let userinfo = &authority.userinfo;
    long_bytes(
        &mut start_ok,
        format!("\0{}\0{}", userinfo.username, userinfo.password).as_bytes(),
    );
    short_string(&mut start_ok, "en_US")?;
    send(&mut stream, START_OK, &start_ok).await?;

    let tune = expect(&mut stream, TUNE).await?;
    let (channel_max, frame_max) = match tune.as_slice() {
        [c1, c2, f1, f2, f3, f4, ..] => (u16::from_be_bytes([*c1, *c2]), u32::from_be_bytes([*f1, *f2, *f3, *f4])),
        _ => return Err("short connection.tune".into()),
    };
    let mut tune_ok = Vec::new();
    tune_ok.extend_from_slice(&channel_max.to_be_bytes());
    tune_ok.extend_from_slice(&frame_max.to_be_bytes());
    tune_ok.extend_from_slice(&0u16.to_be_bytes()); // no heartbeats
    send(&mut stream, TUNE_OK, &tune_ok).await?;

    let mut open = Vec::new();
    short_string(&mut open, &uri.vhost)?;
    short_string(&mut open, "")?;
    open.push(0);
    send(&mut stream, OPEN, &open).await?;
    expect(&mut stream, OPEN_OK).await?;

    let mut close = Vec::new();
    close.extend_from_slice(&200u16.to_be_bytes());
    short_string(&mut close, "version read")?;
    close.extend_from_slice(&[0, 0, 0, 0]);
    send(&mut stream, CLOSE, &close).await?;
    expect(&mut stream, CLOSE_OK).await?;
    Ok(info)
}

/// The server properties of a `connection.start` (its arguments, after the
/// class and method IDs).
fn parse_start(arguments: &[u8]) -> Result<ServerInfo, String> {
    // version-major, version-minor, then the server-properties table.
    let table = arguments.get(2..).ok_or("short connection.start")?;
    let (_, properties) = lapin::types::parsing::parse_field_table(table)
        .map_err(|e| format!("unreadable server properties in connection.start: {e}"))?;
    Ok(ServerInfo {
        product: text(&properties, "product"),
        version: text(&properties, "version"),
        platform: text(&properties, "platform"),
    })
}

fn text(table: &FieldTable, name: &str) -> String {
    match table.inner().get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_string(),
        _ => String::new(),
    }
}

fn short_string(out: &mut Vec<u8>, s: &str) -> Result<(), String> {
    let len = u8::try_from(s.len()).map_err(|_| format!("{s:?} is longer than 255 bytes"))?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn long_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Tables and strings here are a few dozen bytes.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A field-table entry of type long string.
fn string_entry(table: &mut Vec<u8>, name: &str, value: &str) {
    table.push(name.len() as u8);
    table.extend_from_slice(name.as_bytes());
    table.push(b'S');
    long_bytes(table, value.as_bytes());
}

/// A method frame of class `connection` on channel 0.
fn frame(method: u16, arguments: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(arguments.len() + 4);
    payload.extend_from_slice(&CONNECTION.to_be_bytes());
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(arguments);
    let mut frame = vec![FRAME_METHOD, 0, 0];
    long_bytes(&mut frame, &payload);
    frame.push(FRAME_END);
    frame
}

async fn send(stream: &mut TcpStream, method: u16, arguments: &[u8]) -> Result<(), String> {
    stream
        .write_all(&frame(method, arguments))
        .await
        .map_err(|e| e.to_string())
}

/// Reads frames until a `connection` method arrives; returns its arguments
/// if it is `method`. A `connection.close` from the broker (a wrong
/// password, a vhost it does not know) is an error with its words.
async fn expect(stream: &mut TcpStream, method: u16) -> Result<Vec<u8>, String> {
    loop {
        let mut header = [0u8; 7];
        stream.read_exact(&mut header).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the broker closed the connection".to_string(),
            _ => e.to_string(),
        })?;
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
        if size > MAX_FRAME {
            return Err(format!("a frame of {size} bytes: is this an AMQP 0-9-1 broker?"));
        }
        let mut payload = vec![0u8; size as usize + 1];
        stream.read_exact(&mut payload).await.map_err(|e| e.to_string())?;
        if payload.pop() != Some(FRAME_END) {
            return Err("malformed frame".into());
        }
        match header[0] {
            FRAME_HEARTBEAT => continue,
            FRAME_METHOD => {}
            other => return Err(format!("unexpected frame type {other}")),
        }
        let (class, got) = match payload.as_slice() {
            [c1, c2, m1, m2, ..] => (u16::from_be_bytes([*c1, *c2]), u16::from_be_bytes([*m1, *m2])),
            _ => return Err("short method frame".into()),
        };
        if class != CONNECTION {
            return Err(format!("unexpected method {class}.{got}"));
        }
        let arguments = payload.split_off(4);
        if got == method {
            return Ok(arguments);
        }
        if got == CLOSE {
            let reason = arguments
                .get(2)
                .and_then(|&len| arguments.get(3..3 + usize::from(len)))
                .map(|text| String::from_utf8_lossy(text).into_owned())
                .unwrap_or_default();
            // Acknowledge it, as the protocol asks; the broker closes the socket.
            let _ = send(stream, CLOSE_OK, &[]).await;
            return Err(format!("the broker closed the connection: {reason}"));
        }
        return Err(format!("expected connection method {method}, got {got}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_the_start_method() {
        let mut table = Vec::new();
        string_entry(&mut table, "product", "RabbitMQ");
        string_entry(&mut table, "version", "4.0.5");
        string_entry(&mut table, "platform", "Erlang/OTP 27.3.4.1");
        let mut start = vec![0, 9];
        long_bytes(&mut start, &table);
        let info = parse_start(&start).unwrap();
        assert_eq!(info.to_string(), "RabbitMQ 4.0.5 (Erlang/OTP 27.3.4.1)");
        assert_eq!(info.major(), Some(4));
        assert!(parse_start(&[0]).is_err());
    }

    #[test]
    fn frames_carry_class_method_size_and_end() {
        assert_eq!(
            frame(CLOSE_OK, &[]),
            [FRAME_METHOD, 0, 0, 0, 0, 0, 4, 0, 10, 0, 51, FRAME_END]
        );
    }

    #[tokio::test]
    async fn only_amqp_urls_are_read() {
        let uri: lapin::uri::AMQPUri = "amqps://h/".parse().unwrap();
        let error = read_uri(&uri, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(error, ServerInfoError::Url(_)), "{error}");
    }
}
