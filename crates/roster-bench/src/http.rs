//! A minimal HTTP/1.1 client for the few REST calls a run needs (declaring a room with
//! a capacity before a fan-out, scraping `/metrics` during a churn run). Plain
//! `http://host:port` on loopback only; one request per connection; never used on a
//! measured path.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `method path` with a JSON body and a bearer token; returns (status, body).
pub async fn request_json(
    base: &str,
    method: &str,
    path: &str,
    bearer: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let headers = format!(
        "authorization: Bearer {bearer}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n",
        body.len()
    );
    request(base, method, path, &headers, body).await
}

/// `GET path` without credentials (e.g. `/metrics`); returns (status, body).
pub async fn get(base: &str, path: &str) -> Result<(u16, String), String> {
    request(base, "GET", path, "", "").await
}

/// One request on a fresh connection; `headers` are complete `name: value\r\n` lines.
async fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let host = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// bases are supported, got {base:?}"))?
        .trim_end_matches('/');
    let fut = async {
        let mut tcp = TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {host}\r\n{headers}connection: close\r\n\r\n{body}"
        );
        tcp.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send to {host}: {e}"))?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read from {host}: {e}"))?;
        parse_response(&raw)
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| format!("{method} {path}: no answer within 10 s"))?
}

fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP response: {:?}",
                text.chars().take(80).collect::<String>()
            )
        })?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("transfer-encoding:")
            .is_some_and(|v| v.contains("chunked"))
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// The payload of a `Transfer-Encoding: chunked` body (extensions and trailers
/// ignored; a truncated or malformed body yields what was complete).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size_line, after)) = rest.split_once("\r\n") {
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            break;
        };
        let Some(chunk) = after.get(..size) else {
            break;
        };
        if size == 0 {
            break;
        }
        out.push_str(chunk);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse() {
        let (s, b) =
            parse_response(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_str()), (201, "{}"));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=1\r\nefg\r\n0\r\n\r\n";
        let (s, b) = parse_response(raw).unwrap();
        assert_eq!((s, b.as_str()), (200, "abcdefg"));
    }
}
