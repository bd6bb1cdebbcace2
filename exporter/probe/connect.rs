//! The connect step: can a TCP connection to the update server be opened?
//!
//! The addresses from the dns step are tried in order and the first that
//! accepts is used. Each attempt may use what is left of the probe's
//! deadline, so a silently dropped first address costs the whole deadline:
//! that is what the connector meets too, and it is reported as `timeout`.
//!
//! The step does not send anything; whether the server speaks TLS is the
//! tls step's question.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::StepError;

/// Why no TCP connection could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{addr}: connection refused")]
    Refused { addr: SocketAddr },
    #[error("{addr}: no connection before the deadline")]
    Timeout { addr: SocketAddr },
    #[error("{addr}: unreachable: {detail}")]
    Unreachable { addr: SocketAddr, detail: String },
    #[error("no address to connect to")]
    NoAddress,
}

impl StepError for ConnectError {
    fn reason(&self) -> &'static str {
        match self {
            ConnectError::Refused { .. } => "refused",
            ConnectError::Timeout { .. } => "timeout",
            ConnectError::Unreachable { .. } | ConnectError::NoAddress => "unreachable",
        }
    }
}

/// Connects to the first of `addresses` that accepts on `port`.
pub async fn connect(
    addresses: &[IpAddr],
    port: u16,
    deadline: Instant,
) -> Result<TcpStream, ConnectError> {
    let mut last_error = ConnectError::NoAddress;
    for ip in addresses {
        let addr = SocketAddr::new(*ip, port);
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_elapsed) => return Err(ConnectError::Timeout { addr }),
            Ok(Ok(stream)) => {
                // The download is a handful of small writes; waiting to
                // coalesce them only adds latency to the measurement.
                let _ = stream.set_nodelay(true);
                tracing::debug!(%addr, "connected");
                return Ok(stream);
            }
            Ok(Err(error)) => {
                tracing::debug!(%addr, %error, "connect attempt failed");
                last_error = classify(addr, &error);
            }
        }
    }
    Err(last_error)
}

fn classify(addr: SocketAddr, error: &std::io::Error) -> ConnectError {
    match error.kind() {
        ErrorKind::ConnectionRefused => ConnectError::Refused { addr },
        ErrorKind::TimedOut => ConnectError::Timeout { addr },
        _ => ConnectError::Unreachable {
            addr,
            detail: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_reasons() {
        let addr: SocketAddr = "192.0.2.1:443".parse().expect("addr");
        let reason = |kind| classify(addr, &std::io::Error::from(kind)).reason();
        assert_eq!(reason(ErrorKind::ConnectionRefused), "refused");
        assert_eq!(reason(ErrorKind::TimedOut), "timeout");
        assert_eq!(reason(ErrorKind::HostUnreachable), "unreachable");
        assert_eq!(reason(ErrorKind::NetworkUnreachable), "unreachable");
    }
}
