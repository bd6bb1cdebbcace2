//! The test harness: real servers on loopback for every hop the exporter
//! probes, on ports the harness picks.
//!
//! - DNS: dnsmasq answers the `tetra.test` zone (addresses, NXDOMAIN for
//!   unknown names in the zone, NODATA for a name with only a TXT record,
//!   REFUSED for names outside it); unbound answers SERVFAIL for `sf.test`
//!   (it forwards there to dnsmasq, which refuses); a UDP socket that reads
//!   and never answers stands for a dead server.
//! - TLS: rustls servers with a test CA, an intermediate and leaves that are
//!   good, expired, not yet valid, for another name, from an unknown CA, and
//!   a self-signed CA presented as the leaf; plus a TCP server that accepts
//!   and never speaks. The good server serves `/` (200), `/missing` (404),
//!   `/error` (500), `/cut` (a body cut off mid-way), `/huge` (a 2 MiB body)
//!   and `/stall` (headers, then nothing).
//! - HTTP: the versions document, and a 500 for the failure case.
//! - Revocation: the CAs' OCSP responders and CRLs, and one TLS server per
//!   revocation scenario (see [`pki`]). The good server's chain names them,
//!   so the default `require` mode passes on it.
//!
//! Every child process is killed and waited for when the harness drops.

#![allow(dead_code)]

pub mod pki;
pub mod process;
pub mod prometheus;
pub mod proxies;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, UdpSocket};

pub const ZONE: &str = "tetra.test";

/// Names dnsmasq resolves to 127.0.0.1, one per TLS server.
pub const TLS_NAMES: [&str; 7] = [
    "good",
    "expired",
    "future",
    "wrongname",
    "unknownca",
    "selfsigned",
    "hang",
];

/// A PEM bundle and key for one server.
struct ServerCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// Kills a child process and waits for it when dropped.
pub struct ChildGuard {
    name: &'static str,
    child: Child,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything a scenario needs, alive as long as the value.
pub struct Harness {
    pub dir: tempfile::TempDir,
    /// dnsmasq, answering the test zone.
    pub dns: SocketAddr,
    /// unbound, answering SERVFAIL for `sf.test`.
    pub servfail_dns: SocketAddr,
    /// A UDP socket that never answers.
    pub silent_dns: SocketAddr,
    /// The test root CA, PEM.
    pub ca_file: PathBuf,
    /// Port of each TLS server by name.
    pub tls_ports: Vec<(&'static str, u16)>,
    /// A port on which nothing listens.
    pub closed_port: u16,
    /// Connections accepted by the good server.
    pub good_connections: Arc<AtomicUsize>,
    /// The versions document.
    pub versions_url: String,
    /// A versions URL that answers 500.
    pub versions_broken_url: String,
    /// The revocation servers and scenario TLS servers.
    pub revocation: pki::RevocationServers,
    children: Vec<ChildGuard>,
    _silent: UdpSocket,
}

impl Harness {
    /// Starts every server. Must run inside a multi-threaded tokio runtime.
    pub async fn start() -> Harness {
        tetra_exporter::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");

        let pki = pki::Pki::new().await;
        let certs = make_certs(dir.path(), &pki);
        let (revocation, revocation_children) = pki.start(dir.path()).await;
        let good_connections = Arc::new(AtomicUsize::new(0));
        let mut tls_ports = Vec::new();
        for (name, cert) in certs.servers {
            let port = if name == "hang" {
                start_silent_tcp().await
            } else {
                let counter = (name == "good").then(|| good_connections.clone());
                start_tls_server(cert, counter).await
            };
            tls_ports.push((name, port));
        }

        let closed_port = {
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
            listener.local_addr().expect("addr").port()
        };

        let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("udp bind");
        let silent_dns = silent.local_addr().expect("addr");

        let mut children = revocation_children;
        let (dnsmasq, dns_port) = start_dns_server(&format!("good.{ZONE}"), |port| {
            start_dnsmasq(dir.path(), port)
        })
        .await;
        children.push(dnsmasq);
        let (unbound, unbound_port) = start_dns_server("x.sf.test", |port| {
            start_unbound(dir.path(), port, dns_port)
        })
        .await;
        children.push(unbound);
        let dns = SocketAddr::from((Ipv4Addr::LOCALHOST, dns_port));
        let servfail_dns = SocketAddr::from((Ipv4Addr::LOCALHOST, unbound_port));

        let versions =
            std::fs::read(shared_fixture("versions/versions.id")).expect("versions fixture");
        let http_port = start_http_server(versions).await;

        Harness {
            ca_file: certs.ca_file,
            dir,
            dns,
            servfail_dns,
            silent_dns,
            tls_ports,
            closed_port,
            good_connections,
            versions_url: format!("http://127.0.0.1:{http_port}/versions.id"),
            versions_broken_url: format!("http://127.0.0.1:{http_port}/broken"),
            revocation,
            children,
            _silent: silent,
        }
    }

    /// The port of the TLS server called `name`.
    pub fn port(&self, name: &str) -> u16 {
        self.tls_ports
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, port)| *port)
            .unwrap_or_else(|| panic!("no server {name}"))
    }

    /// A config whose DNS and CA point at this harness, with the given
    /// `servers:` entries and extra top-level YAML.
    pub fn config_yaml(&self, servers: &str, extra: &str) -> String {
        format!(
            "servers:\n{servers}\ndns:\n  server: \"{dns}\"\ntls:\n  ca_files: [\"{ca}\"]\n{extra}\n",
            dns = self.dns,
            ca = self.ca_file.display(),
        )
    }

    /// Writes a file into the harness's directory and returns its path.
    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }
}

/// A fixture under `../shared/fixtures`.
pub fn shared_fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(relative)
}

/// A fixture under `tests/fixtures`.
pub fn own_fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// A TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("addr").port()
}

fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("udp bind");
    socket.local_addr().expect("addr").port()
}

pub fn which(binary: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let path = Path::new(dir).join(binary);
        if path.exists() {
            return path;
        }
    }
    panic!("{binary} is not installed: run the README's test command, which installs it");
}

fn start_dnsmasq(dir: &Path, port: u16) -> ChildGuard {
    let mut command = Command::new(which("dnsmasq"));
    command
        .arg("--keep-in-foreground")
        .arg("--conf-file=/dev/null")
        .arg("--no-resolv")
        .arg("--no-hosts")
        .arg("--bind-interfaces")
        .arg("--listen-address=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .arg("--user=root")
        .arg(format!("--local=/{ZONE}/"))
        .arg(format!("--txt-record=noaddr.{ZONE},nothing-here"))
        .arg(format!("--host-record=closed.{ZONE},127.0.0.1"))
        .arg(format!("--address=/{}/127.0.0.1", pki::REV_ZONE));
    for name in TLS_NAMES {
        command.arg(format!("--host-record={name}.{ZONE},127.0.0.1"));
    }
    spawn("dnsmasq", &mut command)
}

fn start_unbound(dir: &Path, port: u16, upstream_port: u16) -> ChildGuard {
    let config = format!(
        "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  chroot: \"\"\n  \
         username: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  use-syslog: no\n  \
         logfile: \"\"\n  verbosity: 0\n  module-config: \"iterator\"\n  \
         do-not-query-localhost: no\n  access-control: 127.0.0.0/8 allow\n  \
         trust-anchor-file: \"\"\n  local-zone: \"test.\" nodefault\n\
         forward-zone:\n  name: \"sf.test.\"\n  forward-addr: 127.0.0.1@{upstream_port}\n\
         remote-control:\n  control-enable: no\n",
        dir = dir.display(),
    );
    let path = dir.join("unbound.conf");
    std::fs::write(&path, config).expect("unbound config");
    let mut command = Command::new(which("unbound"));
    command.arg("-d").arg("-c").arg(&path);
    spawn("unbound", &mut command)
}

pub fn spawn(name: &'static str, command: &mut Command) -> ChildGuard {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    ChildGuard { name, child }
}

/// Starts a DNS server on a free port and waits until it answers a query
/// for `name` (any answer). A port picked free can be taken again before the
/// server binds it (other tests' resolvers open UDP sockets all the time),
/// so a server that does not come up is started again on another port.
async fn start_dns_server(name: &str, start: impl Fn(u16) -> ChildGuard) -> (ChildGuard, u16) {
    for _attempt in 0..5 {
        let port = free_udp_port();
        let mut child = start(port);
        let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            if matches!(child.child.try_wait(), Ok(Some(_))) {
                break;
            }
            let probe = tetra_exporter::probe::dns::resolve(
                name,
                Some(server),
                tokio::time::Instant::now() + Duration::from_millis(300),
            )
            .await;
            let answered = !matches!(
                probe,
                Err(tetra_exporter::probe::dns::DnsStepError::Timeout { .. })
                    | Err(tetra_exporter::probe::dns::DnsStepError::Resolver { .. })
            );
            if answered {
                return (child, port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "{} did not answer on port {port}; trying another port",
            child.name
        );
    }
    panic!("the DNS server for {name} did not start");
}

struct Certs {
    ca_file: PathBuf,
    servers: Vec<(&'static str, ServerCert)>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn leaf_params(dns_name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(vec![dns_name.to_string()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, dns_name);
    params
}

fn pkcs8(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

fn make_certs(dir: &Path, pki: &pki::Pki) -> Certs {
    let root_cert = &pki.root_cert;
    let inter_cert = &pki.inter_cert;
    let intermediate = &pki.intermediate;

    let rogue_key = KeyPair::generate().expect("key");
    let rogue = Issuer::new(ca_params("Rogue Inspection CA"), rogue_key);

    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, root_cert.pem()).expect("write ca");

    let now = time_now();
    let leaf = |name: &str, edit: &dyn Fn(&mut CertificateParams), issuer: &Issuer<KeyPair>| {
        let key = KeyPair::generate().expect("key");
        let mut params = leaf_params(name);
        params.not_before = now - Duration::from_secs(3600);
        params.not_after = now + Duration::from_secs(30 * 86400);
        edit(&mut params);
        let cert = params.signed_by(&key, issuer).expect("leaf");
        (cert.der().clone(), pkcs8(&key))
    };
    let with_intermediate =
        |(der, key): (CertificateDer<'static>, PrivateKeyDer<'static>)| ServerCert {
            chain: vec![der, inter_cert.der().clone()],
            key,
        };

    let mut servers = Vec::new();
    servers.push((
        "good",
        with_intermediate(leaf(
            &format!("good.{ZONE}"),
            &|p| pki.with_good_urls(p),
            intermediate,
        )),
    ));
    servers.push((
        "expired",
        with_intermediate(leaf(
            &format!("expired.{ZONE}"),
            &|p| {
                p.not_before = now - Duration::from_secs(60 * 86400);
                p.not_after = now - Duration::from_secs(86400);
            },
            intermediate,
        )),
    ));
    servers.push((
        "future",
        with_intermediate(leaf(
            &format!("future.{ZONE}"),
            &|p| {
                p.not_before = now + Duration::from_secs(86400);
                p.not_after = now + Duration::from_secs(60 * 86400);
            },
            intermediate,
        )),
    ));
    servers.push((
        "wrongname",
        with_intermediate(leaf(&format!("other.{ZONE}"), &|_| {}, intermediate)),
    ));
    let (der, key) = leaf(&format!("unknownca.{ZONE}"), &|_| {}, &rogue);
    servers.push((
        "unknownca",
        ServerCert {
            chain: vec![der],
            key,
        },
    ));

    // What an intercepting middlebox without a proper chain presents: its
    // own CA certificate, self-signed, naming the host.
    let self_key = KeyPair::generate().expect("key");
    let mut self_params = ca_params("Inspection Appliance");
    self_params.subject_alt_names = leaf_params(&format!("selfsigned.{ZONE}")).subject_alt_names;
    let self_cert = self_params.self_signed(&self_key).expect("self-signed");
    servers.push((
        "selfsigned",
        ServerCert {
            chain: vec![self_cert.der().clone()],
            key: pkcs8(&self_key),
        },
    ));

    // The hanging server never gets to present a certificate.
    let (der, key) = leaf(&format!("hang.{ZONE}"), &|_| {}, intermediate);
    servers.push((
        "hang",
        ServerCert {
            chain: vec![der],
            key,
        },
    ));

    Certs { ca_file, servers }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

pub async fn start_silent_tcp() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            // Keep the connection open and say nothing.
            held.push(stream);
        }
    });
    port
}

async fn start_tls_server(cert: ServerCert, counter: Option<Arc<AtomicUsize>>) -> u16 {
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(cert.chain, cert.key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if let Some(counter) = &counter {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service_fn(update_server_routes))
                    .await;
            });
        }
    });
    port
}

type BoxedBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(status: u16, body: impl Into<Bytes>) -> hyper::Response<BoxedBody> {
    use http_body_util::BodyExt;
    let mut response = hyper::Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    response
}

async fn update_server_routes(
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<BoxedBody>, Infallible> {
    use http_body_util::BodyExt;
    let response = match request.uri().path() {
        "/" => full(200, "tetra definitions live here\n"),
        "/missing" => full(404, "not found\n"),
        "/error" => full(500, "internal error\n"),
        "/huge" => full(200, vec![b'x'; 2 * 1024 * 1024]),
        "/cut" => {
            // Announces 1000 bytes, sends 100, then fails: the connection is
            // closed mid-body.
            use futures_util::StreamExt;
            let frames = futures_util::stream::iter(vec![
                Ok(Frame::data(Bytes::from(vec![b'y'; 100]))),
                Err(std::io::Error::other("cut")),
            ])
            .then(|frame| async move {
                // Let the first 100 bytes reach the client before the cut.
                if frame.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                frame
            });
            let mut response = hyper::Response::new(BodyExt::boxed(StreamBody::new(frames)));
            response.headers_mut().insert(
                hyper::header::CONTENT_LENGTH,
                hyper::header::HeaderValue::from(1000),
            );
            response
        }
        "/stall" => {
            let frames = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Frame::data(Bytes::from_static(b"late")))
            });
            hyper::Response::new(StreamBody::new(frames).boxed())
        }
        _ => full(404, "no such path\n"),
    };
    Ok(response)
}

async fn start_http_server(versions: Vec<u8>) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let versions = Bytes::from(versions);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let versions = versions.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let versions = versions.clone();
                    async move {
                        let response = match request.uri().path() {
                            "/versions.id" => full(200, versions),
                            _ => full(500, "broken\n"),
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

/// The value of the series `name{labels}` in classic text exposition, where
/// `labels` is written exactly as the exporter writes it.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}
