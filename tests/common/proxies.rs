//! Real HTTP proxies on loopback for the proxy route's tests.
//!
//! - squid with Basic authentication (`basic_ncsa_auth` and an APR1
//!   password file made by `openssl passwd`), a hosts file for the test
//!   names, and an ACL that denies `denied.tetra.test`. Missing and wrong
//!   credentials both get 407; a CONNECT to a port where nothing listens
//!   gets 503.
//! - tinyproxy with Basic authentication, which answers 401 (not 407) to
//!   wrong credentials.
//! - A proxy that offers only NTLM and Negotiate (an in-process hyper
//!   server: no Debian proxy does that without a domain).
//!
//! squid drops its privileges to the `proxy` user, so its directory is made
//! world-readable and writable.

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{free_tcp_port, spawn, which, ChildGuard, ZONE};

pub const PROXY_USER: &str = "tetra";
pub const PROXY_PASSWORD: &str = "pa55-w0rd-that-must-not-leak";

/// A running proxy.
pub struct Proxy {
    pub port: u16,
    /// squid's access log: every request it handled, one per line.
    pub access_log: Option<std::path::PathBuf>,
    _child: Option<ChildGuard>,
}

async fn wait_for_port(port: u16, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not start on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn apr1_hash(password: &str) -> String {
    let output = Command::new(which("openssl"))
        .args(["passwd", "-apr1", password])
        .output()
        .expect("openssl passwd");
    assert!(output.status.success(), "openssl passwd failed");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// Starts squid in `dir` (created), resolving the test names to loopback.
pub async fn start_squid(dir: &Path) -> Proxy {
    std::fs::create_dir_all(dir).expect("squid dir");
    // squid runs as the `proxy` user: every directory above must be
    // traversable and this one writable.
    for ancestor in [dir.parent().expect("parent"), dir] {
        let mode = if ancestor == dir { 0o777 } else { 0o755 };
        std::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    let port = free_tcp_port();
    let passwd = dir.join("passwd");
    std::fs::write(
        &passwd,
        format!("{PROXY_USER}:{}\n", apr1_hash(PROXY_PASSWORD)),
    )
    .expect("passwd");
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1 good.{ZONE} denied.{ZONE} down.{ZONE}\n"),
    )
    .expect("hosts");
    let config = format!(
        "http_port 127.0.0.1:{port}\n\
         pid_filename {dir}/squid.pid\n\
         cache_log {dir}/cache.log\n\
         access_log stdio:{dir}/access.log\n\
         cache deny all\n\
         hosts_file {hosts}\n\
         dns_nameservers 127.0.0.1\n\
         dns_timeout 1 seconds\n\
         pinger_enable off\n\
         shutdown_lifetime 1 seconds\n\
         coredump_dir {dir}\n\
         auth_param basic program /usr/lib/squid/basic_ncsa_auth {passwd}\n\
         auth_param basic realm tetra-test\n\
         acl authed proxy_auth REQUIRED\n\
         acl denied_host dstdomain denied.{ZONE}\n\
         http_access deny denied_host\n\
         http_access allow authed\n\
         http_access deny all\n",
        dir = dir.display(),
        hosts = hosts.display(),
        passwd = passwd.display(),
    );
    let config_path = dir.join("squid.conf");
    std::fs::write(&config_path, config).expect("squid.conf");
    for file in [&passwd, &hosts, &config_path] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }

    let mut command = Command::new(which("squid"));
    command.arg("-N").arg("-f").arg(&config_path);
    let child = spawn("squid", &mut command);
    wait_for_port(port, "squid").await;
    Proxy {
        port,
        access_log: Some(dir.join("access.log")),
        _child: Some(child),
    }
}

/// Starts tinyproxy with Basic authentication.
pub async fn start_tinyproxy(dir: &Path) -> Proxy {
    std::fs::create_dir_all(dir).expect("tinyproxy dir");
    let port = free_tcp_port();
    let config = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 10\nMaxClients 20\n\
         LogLevel Critical\nBasicAuth {PROXY_USER} {PROXY_PASSWORD}\n"
    );
    let config_path = dir.join("tinyproxy.conf");
    std::fs::write(&config_path, config).expect("tinyproxy.conf");
    let mut command = Command::new(which("tinyproxy"));
    command.arg("-d").arg("-c").arg(&config_path);
    let child = spawn("tinyproxy", &mut command);
    wait_for_port(port, "tinyproxy").await;
    Proxy {
        port,
        access_log: None,
        _child: Some(child),
    }
}

/// Starts a proxy that answers every request with 407 and offers only NTLM
/// and Negotiate.
pub async fn start_ntlm_only() -> Proxy {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_request: hyper::Request<hyper::body::Incoming>| async {
                    let mut response = hyper::Response::new(Full::new(Bytes::from_static(
                        b"proxy authentication required\n",
                    )));
                    *response.status_mut() = hyper::StatusCode::PROXY_AUTHENTICATION_REQUIRED;
                    let headers = response.headers_mut();
                    headers.append(
                        hyper::header::PROXY_AUTHENTICATE,
                        hyper::header::HeaderValue::from_static("NTLM"),
                    );
                    headers.append(
                        hyper::header::PROXY_AUTHENTICATE,
                        hyper::header::HeaderValue::from_static("Negotiate"),
                    );
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Proxy {
        port,
        access_log: None,
        _child: None,
    }
}
