//! The dns step: does the update server's name resolve?
//!
//! The name is resolved either by the system's resolver configuration
//! (`/etc/resolv.conf`, the Windows registry, and the hosts file) or, when the
//! config names one, by a single DNS server asked over UDP once. Nothing is
//! cached between probes, so each probe really asks. IP literals skip the
//! question and yield themselves.
//!
//! The step only answers "which addresses"; it does not check that they are
//! reachable (that is the connect step).

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::TokioResolver;
use tokio::time::Instant;

use super::StepError;

/// Why the name did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum DnsStepError {
    #[error("{name}: the name does not exist (NXDOMAIN)")]
    NxDomain { name: String },
    #[error("{name}: the server failed to answer (SERVFAIL)")]
    ServFail { name: String },
    #[error("{name}: the server refused the query (REFUSED)")]
    Refused { name: String },
    #[error("{name}: no answer before the deadline")]
    Timeout { name: String },
    #[error("{name}: the name exists but has no A or AAAA records")]
    NoAddresses { name: String },
    #[error("{name}: resolver error: {detail}")]
    Resolver { name: String, detail: String },
}

impl StepError for DnsStepError {
    fn reason(&self) -> &'static str {
        match self {
            DnsStepError::NxDomain { .. } => "nxdomain",
            DnsStepError::ServFail { .. } => "servfail",
            DnsStepError::Refused { .. } => "refused",
            DnsStepError::Timeout { .. } => "timeout",
            DnsStepError::NoAddresses { .. } => "no_addresses",
            DnsStepError::Resolver { .. } => "resolver_error",
        }
    }
}

/// Resolves `name` to its addresses, IPv4 and IPv6, in the order the
/// resolver returned them.
pub async fn resolve(
    name: &str,
    server: Option<SocketAddr>,
    deadline: Instant,
) -> Result<Vec<IpAddr>, DnsStepError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }

    let remaining = deadline.saturating_duration_since(Instant::now());
    let resolver = build_resolver(server, remaining).map_err(|e| DnsStepError::Resolver {
        name: name.to_string(),
        detail: e.to_string(),
    })?;

    // A trailing dot makes the name absolute so that search domains of the
    // host are not tried: the connector asks for exactly this name.
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let lookup = tokio::time::timeout_at(deadline, resolver.lookup_ip(fqdn.as_str())).await;
    let lookup = match lookup {
        Err(_elapsed) => {
            return Err(DnsStepError::Timeout {
                name: name.to_string(),
            })
        }
        Ok(result) => result.map_err(|e| classify(name, e))?,
    };

    let addresses: Vec<IpAddr> = lookup.iter().collect();
    if addresses.is_empty() {
        return Err(DnsStepError::NoAddresses {
            name: name.to_string(),
        });
    }
    tracing::debug!(count = addresses.len(), "name resolved");
    Ok(addresses)
}

fn build_resolver(
    server: Option<SocketAddr>,
    timeout: std::time::Duration,
) -> Result<TokioResolver, NetError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match server {
        Some(addr) => {
            let mut name_server = NameServerConfig::udp(addr.ip());
            for connection in &mut name_server.connections {
                connection.port = addr.port();
            }
            // With one server there is nobody else to ask: a negative answer
            // is final.
            name_server.trust_negative_responses = true;
            let config = ResolverConfig::from_name_servers(vec![name_server]);
            TokioResolver::builder_with_config(config, provider)
        }
        None => TokioResolver::builder(provider)?,
    };

    let opts: &mut ResolverOpts = builder.options_mut();
    opts.attempts = 1;
    opts.cache_size = 0;
    opts.try_tcp_on_error = false;
    if !timeout.is_zero() {
        opts.timeout = timeout;
    }
    builder.build()
}

/// Maps a resolver error onto the step's reasons.
fn classify(name: &str, error: NetError) -> DnsStepError {
    let name = name.to_string();
    match &error {
        NetError::Timeout => DnsStepError::Timeout { name },
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => match no_records.response_code {
            ResponseCode::NXDomain => DnsStepError::NxDomain { name },
            ResponseCode::ServFail => DnsStepError::ServFail { name },
            ResponseCode::Refused => DnsStepError::Refused { name },
            _ => DnsStepError::NoAddresses { name },
        },
        NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain)) => {
            DnsStepError::NxDomain { name }
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
            DnsStepError::ServFail { name }
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => {
            DnsStepError::Refused { name }
        }
        NetError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            DnsStepError::Timeout { name }
        }
        _ => DnsStepError::Resolver {
            name,
            detail: error.to_string(),
        },
    }
}
