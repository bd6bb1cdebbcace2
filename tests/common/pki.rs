//! The test PKI and its revocation servers, on loopback.
//!
//! - A root CA and an intermediate whose certificates carry a CRL
//!   Distribution Point and an OCSP responder (Authority Information
//!   Access) on loopback; a second intermediate, revoked by the root.
//! - Real `openssl ocsp` responders: one for the root (signing its own
//!   answers), one for the intermediate (through a delegated responder
//!   certificate with the OCSP-signing usage), and one that signs with an
//!   intermediate-issued certificate lacking that usage. Each sits behind an
//!   in-process relay that counts connections, so tests can count requests
//!   on the server side. `openssl ocsp` takes only a port and listens on
//!   every interface; the certificates name the relay on 127.0.0.1.
//! - An in-process HTTP server for CRLs (good ones in DER and PEM, a stale
//!   one, one signed by another key, a 50 MiB one, garbage), counting
//!   requests per path.
//! - One TLS server per revocation scenario, named `NAME.rev.tetra.test`.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use der::Encode;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    Certificate, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    CustomExtension, ExtendedKeyUsagePurpose, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};

use super::{ca_params, free_tcp_port, leaf_params, pkcs8, which, ChildGuard, ServerCert};

/// The zone of the revocation scenario servers; dnsmasq answers 127.0.0.1
/// for every name under it.
pub const REV_ZONE: &str = "rev.tetra.test";

/// Size of the oversized CRL.
pub const HUGE_CRL_BYTES: usize = 50 * 1024 * 1024;

/// What a scenario's leaf carries and how the CAs answer for it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ocsp {
    /// No OCSP URL.
    None,
    /// The intermediate's responder; listed good.
    Good,
    /// The intermediate's responder; listed revoked.
    Revoked,
    /// The intermediate's responder; not listed at all (answer: unknown).
    Unlisted,
    /// A port where nothing listens.
    Closed,
    /// A port that accepts and never answers.
    Silent,
    /// The responder signing with an unauthorised certificate.
    Unauthorised,
    /// A URL that answers garbage.
    Garbage,
}

/// Which CRL URL a scenario's leaf names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Crl {
    None,
    /// The intermediate's CRL, in DER; the leaf is not on it.
    Good,
    /// The intermediate's CRL, in DER; the leaf is on it.
    Revoked,
    /// The intermediate's CRL, in PEM.
    Pem,
    Closed,
    Stale,
    Forged,
    Huge,
    Garbage,
    /// The intermediate's CRL with a nextUpdate [`SHORT_CRL_SECONDS`] after
    /// the harness started, at a path the harness can take offline.
    ShortLived,
    /// The intermediate's CRL, valid for a day, at a path the harness can
    /// take offline.
    Outage,
}

/// How long the short-lived CRL is valid after the harness starts.
pub const SHORT_CRL_SECONDS: u64 = 8;

/// The CRL paths that [`RevocationServers::crl_offline`] takes down.
pub const SHORT_CRL_PATH: &str = "/short.crl";
pub const OUTAGE_CRL_PATH: &str = "/outage.crl";

/// The scenarios: name, OCSP, CRL, issued by the revoked intermediate.
const SCENARIOS: [(&str, Ocsp, Crl, bool); 16] = [
    ("ocsp-revoked", Ocsp::Revoked, Crl::None, false),
    ("crl-revoked", Ocsp::None, Crl::Revoked, false),
    ("inter-revoked", Ocsp::None, Crl::Good, true),
    ("ocsp-down", Ocsp::Closed, Crl::Good, false),
    ("both-down", Ocsp::Closed, Crl::Closed, false),
    ("ocsp-hang", Ocsp::Silent, Crl::Good, false),
    ("crl-stale", Ocsp::None, Crl::Stale, false),
    ("crl-forged", Ocsp::None, Crl::Forged, false),
    ("ocsp-unauth", Ocsp::Unauthorised, Crl::None, false),
    ("ocsp-unknown", Ocsp::Unlisted, Crl::None, false),
    ("crl-huge", Ocsp::None, Crl::Huge, false),
    ("garbage", Ocsp::Garbage, Crl::Garbage, false),
    ("no-urls", Ocsp::None, Crl::None, false),
    ("crl-pem", Ocsp::None, Crl::Pem, false),
    ("crl-short", Ocsp::None, Crl::ShortLived, false),
    ("crl-outage", Ocsp::None, Crl::Outage, false),
];

/// A certificate issued by the test PKI, for the responders' index files
/// and the CRLs.
struct Issued {
    serial: u64,
    cn: String,
    /// Listed in the issuer's OCSP index (as good or revoked).
    listed: bool,
    /// Revoked in the issuer's OCSP index and on its CRL.
    revoked: bool,
}

/// The CAs and their URLs, before the servers start.
pub struct Pki {
    pub root_cert: Certificate,
    pub root: Issuer<'static, KeyPair>,
    pub inter_cert: Certificate,
    pub intermediate: Issuer<'static, KeyPair>,
    inter2_cert: Certificate,
    inter2: Issuer<'static, KeyPair>,
    inter_params: CertificateParams,
    root_issued: Vec<Issued>,
    inter_issued: Mutex<Vec<Issued>>,
    next_serial: AtomicU64,
    crl_listener: TcpListener,
    crl_base: String,
    relays: Relays,
    closed_port: u16,
    silent_port: u16,
}

/// The relays in front of the OCSP responders, bound before the
/// certificates name them.
struct Relays {
    root: (TcpListener, u16),
    inter: (TcpListener, u16),
    unauth: (TcpListener, u16),
}

/// The running revocation servers and what they counted.
pub struct RevocationServers {
    /// Port of each scenario's TLS server.
    pub ports: Vec<(&'static str, u16)>,
    /// Requests per CRL path.
    pub crl_requests: Arc<Mutex<HashMap<String, usize>>>,
    /// Connections to the root's OCSP responder.
    pub ocsp_root_requests: Arc<AtomicUsize>,
    /// Connections to the intermediate's OCSP responder.
    pub ocsp_inter_requests: Arc<AtomicUsize>,
    /// While set, the CRL server answers no request for [`SHORT_CRL_PATH`]
    /// or [`OUTAGE_CRL_PATH`], as a blocked host does.
    pub crl_offline: Arc<AtomicBool>,
}

impl RevocationServers {
    /// The port of the scenario server `name`.
    pub fn port(&self, name: &str) -> u16 {
        self.ports
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, port)| *port)
            .unwrap_or_else(|| panic!("no revocation scenario {name}"))
    }

    /// Requests the CRL server got for `path`.
    pub fn crl_count(&self, path: &str) -> usize {
        self.crl_requests
            .lock()
            .expect("counter")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

async fn bind() -> (TcpListener, u16) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, port)
}

/// The Authority Information Access extension naming one OCSP responder.
fn aia_ocsp(url: &str) -> CustomExtension {
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
    let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: der::oid::db::rfc5280::ID_AD_OCSP,
        access_location: GeneralName::UniformResourceIdentifier(
            der::asn1::Ia5String::new(url).expect("ia5"),
        ),
    }]);
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], aia.to_der().expect("aia der"))
}

fn add_urls(params: &mut CertificateParams, ocsp: Option<&str>, crl: Option<&str>) {
    if let Some(url) = ocsp {
        params.custom_extensions.push(aia_ocsp(url));
    }
    if let Some(url) = crl {
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.to_string()],
        }];
    }
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

impl Pki {
    /// Makes the CAs and binds the ports their certificates name.
    pub async fn new() -> Pki {
        let (crl_listener, crl_port) = bind().await;
        let crl_base = format!("http://127.0.0.1:{crl_port}");
        let relays = Relays {
            root: bind().await,
            inter: bind().await,
            unauth: bind().await,
        };
        let closed_port = free_tcp_port();
        let silent_port = super::start_silent_tcp().await;
        let next_serial = AtomicU64::new(0x1000_0000_0000_0001);
        let serial = || next_serial.fetch_add(1, Ordering::SeqCst);
        let span = |params: &mut CertificateParams| {
            params.not_before = now() - Duration::from_secs(3600);
            params.not_after = now() + Duration::from_secs(365 * 86400);
        };

        let root_key = KeyPair::generate().expect("key");
        let mut root_params = ca_params("Tetra Test Root CA");
        span(&mut root_params);
        root_params.serial_number = Some(SerialNumber::from(serial()));
        let root_cert = root_params.self_signed(&root_key).expect("root");
        let root = Issuer::new(root_params, root_key);

        let root_ocsp = format!("http://127.0.0.1:{}/", relays.root.1);
        let root_crl = format!("{crl_base}/root.crl");
        let mut root_issued = Vec::new();
        let mut make_inter = |cn: &str, revoked: bool| {
            let key = KeyPair::generate().expect("key");
            let mut params = ca_params(cn);
            span(&mut params);
            let number = serial();
            params.serial_number = Some(SerialNumber::from(number));
            add_urls(&mut params, Some(&root_ocsp), Some(&root_crl));
            let cert = params.signed_by(&key, &root).expect("intermediate");
            root_issued.push(Issued {
                serial: number,
                cn: cn.to_string(),
                listed: true,
                revoked,
            });
            (cert, params, key)
        };
        let (inter_cert, inter_params, inter_key) = make_inter("Tetra Test Intermediate CA", false);
        let (inter2_cert, inter2_params, inter2_key) =
            make_inter("Tetra Test Revoked Intermediate CA", true);

        Pki {
            root_cert,
            root,
            inter_cert,
            intermediate: Issuer::new(inter_params.clone(), inter_key),
            inter2_cert,
            inter2: Issuer::new(inter2_params, inter2_key),
            inter_params,
            root_issued,
            inter_issued: Mutex::new(Vec::new()),
            next_serial,
            crl_listener,
            crl_base,
            relays,
            closed_port,
            silent_port,
        }
    }

    fn serial(&self) -> u64 {
        self.next_serial.fetch_add(1, Ordering::SeqCst)
    }

    /// Gives a leaf the intermediate's good OCSP and CRL URLs and a serial
    /// the intermediate lists as good.
    pub fn with_good_urls(&self, params: &mut CertificateParams) {
        let number = self.serial();
        params.serial_number = Some(SerialNumber::from(number));
        add_urls(
            params,
            Some(&self.inter_ocsp_url()),
            Some(&format!("{}/inter.crl", self.crl_base)),
        );
        self.inter_issued.lock().expect("issued").push(Issued {
            serial: number,
            cn: "leaf".to_string(),
            listed: true,
            revoked: false,
        });
    }

    fn inter_ocsp_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.relays.inter.1)
    }

    /// Makes the scenario leaves, publishes the CRLs and index files, and
    /// starts every server.
    pub async fn start(self, dir: &Path) -> (RevocationServers, Vec<ChildGuard>) {
        let mut leaves = Vec::new();
        for (name, ocsp, crl, under_revoked) in SCENARIOS {
            let key = KeyPair::generate().expect("key");
            let host = format!("{name}.{REV_ZONE}");
            let mut params = leaf_params(&host);
            params.not_before = now() - Duration::from_secs(3600);
            params.not_after = now() + Duration::from_secs(30 * 86400);
            let number = self.serial();
            params.serial_number = Some(SerialNumber::from(number));
            let base = &self.crl_base;
            let ocsp_url = match ocsp {
                Ocsp::None => None,
                Ocsp::Good | Ocsp::Revoked | Ocsp::Unlisted => Some(self.inter_ocsp_url()),
                Ocsp::Closed => Some(format!("http://127.0.0.1:{}/", self.closed_port)),
                Ocsp::Silent => Some(format!("http://127.0.0.1:{}/", self.silent_port)),
                Ocsp::Unauthorised => Some(format!("http://127.0.0.1:{}/", self.relays.unauth.1)),
                Ocsp::Garbage => Some(format!("{base}/garbage")),
            };
            let crl_url = match crl {
                Crl::None => None,
                Crl::Good | Crl::Revoked if under_revoked => Some(format!("{base}/inter2.crl")),
                Crl::Good | Crl::Revoked => Some(format!("{base}/inter.crl")),
                Crl::Pem => Some(format!("{base}/inter.pem.crl")),
                Crl::Closed => Some(format!("http://127.0.0.1:{}/inter.crl", self.closed_port)),
                Crl::Stale => Some(format!("{base}/stale.crl")),
                Crl::Forged => Some(format!("{base}/forged.crl")),
                Crl::Huge => Some(format!("{base}/huge.crl")),
                Crl::ShortLived => Some(format!("{base}{SHORT_CRL_PATH}")),
                Crl::Outage => Some(format!("{base}{OUTAGE_CRL_PATH}")),
                Crl::Garbage => Some(format!("{base}/garbage")),
            };
            add_urls(&mut params, ocsp_url.as_deref(), crl_url.as_deref());
            let (issuer, issuer_cert) = if under_revoked {
                (&self.inter2, &self.inter2_cert)
            } else {
                (&self.intermediate, &self.inter_cert)
            };
            let cert = params.signed_by(&key, issuer).expect("leaf");
            if !under_revoked {
                self.inter_issued.lock().expect("issued").push(Issued {
                    serial: number,
                    cn: host.clone(),
                    listed: ocsp != Ocsp::Unlisted,
                    revoked: ocsp == Ocsp::Revoked || crl == Crl::Revoked,
                });
            }
            leaves.push((
                name,
                ServerCert {
                    chain: vec![cert.der().clone(), issuer_cert.der().clone()],
                    key: pkcs8(&key),
                },
            ));
        }

        let crls = self.crls();
        let crl_requests = Arc::new(Mutex::new(HashMap::new()));
        let crl_offline = Arc::new(AtomicBool::new(false));
        serve_crls(
            self.crl_listener,
            crls,
            crl_requests.clone(),
            crl_offline.clone(),
        );

        let mut children = Vec::new();
        let write = |name: &str, contents: &[u8]| -> PathBuf {
            let path = dir.join(name);
            std::fs::write(&path, contents).expect("write pki file");
            path
        };
        let root_pem = write("root.pem", self.root_cert.pem().as_bytes());
        let root_key = write("root.key", self.root.key().serialize_pem().as_bytes());
        let inter_pem = write("inter.pem", self.inter_cert.pem().as_bytes());
        let root_index = write("root-index.txt", index(&self.root_issued).as_bytes());
        let inter_index = {
            let issued = self.inter_issued.lock().expect("issued");
            write("inter-index.txt", index(&issued).as_bytes())
        };

        // The intermediate's delegated responder, and a certificate it
        // issued without the OCSP-signing usage.
        let responder = |cn: &str, ocsp_signing: bool| {
            let key = KeyPair::generate().expect("key");
            let mut params = leaf_params(cn);
            params.subject_alt_names.clear();
            params.not_before = now() - Duration::from_secs(3600);
            params.not_after = now() + Duration::from_secs(30 * 86400);
            params.serial_number = Some(SerialNumber::from(
                self.next_serial.fetch_add(1, Ordering::SeqCst),
            ));
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            if ocsp_signing {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
            }
            let cert = params
                .signed_by(&key, &self.intermediate)
                .expect("responder");
            (cert.pem(), key.serialize_pem())
        };
        let (delegated_pem, delegated_key) = responder("Tetra Test OCSP Responder", true);
        let delegated_pem = write("delegated.pem", delegated_pem.as_bytes());
        let delegated_key = write("delegated.key", delegated_key.as_bytes());
        let (unauth_pem, unauth_key) = responder("Tetra Test Unauthorised Signer", false);
        let unauth_pem = write("unauth.pem", unauth_pem.as_bytes());
        let unauth_key = write("unauth.key", unauth_key.as_bytes());

        let ocsp_root_requests = Arc::new(AtomicUsize::new(0));
        let ocsp_inter_requests = Arc::new(AtomicUsize::new(0));
        let responders = [
            (
                self.relays.root,
                &root_index,
                &root_pem,
                &root_key,
                &root_pem,
                Some(ocsp_root_requests.clone()),
            ),
            (
                self.relays.inter,
                &inter_index,
                &delegated_pem,
                &delegated_key,
                &inter_pem,
                Some(ocsp_inter_requests.clone()),
            ),
            (
                self.relays.unauth,
                &inter_index,
                &unauth_pem,
                &unauth_key,
                &inter_pem,
                None,
            ),
        ];
        for ((listener, _), index, signer, key, ca, counter) in responders {
            let port = free_tcp_port();
            let mut command = Command::new(which("openssl"));
            command
                .arg("ocsp")
                .arg("-index")
                .arg(index)
                .arg("-port")
                .arg(port.to_string())
                .arg("-rsigner")
                .arg(signer)
                .arg("-rkey")
                .arg(key)
                .arg("-CA")
                .arg(ca)
                .args(["-nmin", "1440", "-ignore_err"]);
            children.push(start_responder(&mut command));
            relay(listener, port, counter);
        }

        let mut ports = Vec::new();
        for (name, cert) in leaves {
            ports.push((name, super::start_tls_server(cert, None).await));
        }

        (
            RevocationServers {
                ports,
                crl_requests,
                crl_offline,
                ocsp_root_requests,
                ocsp_inter_requests,
            },
            children,
        )
    }

    /// Every CRL the HTTP server serves, by path.
    fn crls(&self) -> HashMap<&'static str, Bytes> {
        let revoked = |issued: &[Issued]| -> Vec<RevokedCertParams> {
            issued
                .iter()
                .filter(|i| i.revoked)
                .map(|i| RevokedCertParams {
                    serial_number: SerialNumber::from(i.serial),
                    revocation_time: now() - Duration::from_secs(1800),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect()
        };
        let list = |this: time::OffsetDateTime,
                    next: time::OffsetDateTime,
                    revoked: Vec<RevokedCertParams>| {
            CertificateRevocationListParams {
                this_update: this,
                next_update: next,
                crl_number: SerialNumber::from(1u64),
                issuing_distribution_point: None,
                revoked_certs: revoked,
                key_identifier_method: KeyIdMethod::Sha256,
            }
        };
        let fresh = |revoked| {
            list(
                now() - Duration::from_secs(3600),
                now() + Duration::from_secs(86400),
                revoked,
            )
        };
        let inter_revoked = revoked(&self.inter_issued.lock().expect("issued"));

        let mut crls = HashMap::new();
        let der = |crl: rcgen::CertificateRevocationList| Bytes::from(crl.der().to_vec());
        crls.insert(
            "/root.crl",
            der(fresh(revoked(&self.root_issued))
                .signed_by(&self.root)
                .expect("crl")),
        );
        let inter = fresh(inter_revoked.clone())
            .signed_by(&self.intermediate)
            .expect("crl");
        crls.insert("/inter.pem.crl", Bytes::from(inter.pem().expect("pem")));
        crls.insert(OUTAGE_CRL_PATH, der(inter.clone()));
        crls.insert("/inter.crl", der(inter));
        crls.insert(
            "/inter2.crl",
            der(fresh(Vec::new()).signed_by(&self.inter2).expect("crl")),
        );
        crls.insert(
            "/stale.crl",
            der(list(
                now() - Duration::from_secs(2 * 86400),
                now() - Duration::from_secs(86400),
                Vec::new(),
            )
            .signed_by(&self.intermediate)
            .expect("crl")),
        );
        crls.insert(
            SHORT_CRL_PATH,
            der(list(
                now() - Duration::from_secs(60),
                now() + Duration::from_secs(SHORT_CRL_SECONDS),
                Vec::new(),
            )
            .signed_by(&self.intermediate)
            .expect("crl")),
        );
        let forger = Issuer::new(self.inter_params.clone(), KeyPair::generate().expect("key"));
        crls.insert(
            "/forged.crl",
            der(fresh(Vec::new()).signed_by(&forger).expect("crl")),
        );
        crls
    }
}

/// The `openssl ocsp` index file for certificates of one issuer.
fn index(issued: &[Issued]) -> String {
    let stamp = |t: time::OffsetDateTime| {
        format!(
            "{:02}{:02}{:02}{:02}{:02}{:02}Z",
            t.year() % 100,
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    };
    let expiry = stamp(now() + Duration::from_secs(365 * 86400));
    let revoked_at = stamp(now() - Duration::from_secs(1800));
    issued
        .iter()
        .filter(|i| i.listed)
        .map(|i| {
            if i.revoked {
                format!(
                    "R\t{expiry}\t{revoked_at}\t{:016X}\tunknown\t/CN={}\n",
                    i.serial, i.cn
                )
            } else {
                format!("V\t{expiry}\t\t{:016X}\tunknown\t/CN={}\n", i.serial, i.cn)
            }
        })
        .collect()
}

/// Forwards every connection to `target`, counting them.
fn relay(listener: TcpListener, target: u16, counter: Option<Arc<AtomicUsize>>) {
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if let Some(counter) = &counter {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect((Ipv4Addr::LOCALHOST, target)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

/// Starts `openssl ocsp` and waits for its `ACCEPT` line. Readiness is
/// never probed by connecting: `openssl ocsp` (3.0) waits forever on a
/// connection that closes without a request, and then serves nobody.
fn start_responder(command: &mut Command) -> ChildGuard {
    use std::io::BufRead;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl ocsp");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("ACCEPT") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("openssl ocsp did not start listening");
    ChildGuard {
        name: "openssl ocsp",
        child,
    }
}

type BoxedBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn serve_crls(
    listener: TcpListener,
    crls: HashMap<&'static str, Bytes>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    offline: Arc<AtomicBool>,
) {
    let crls = Arc::new(crls);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let crls = crls.clone();
            let counts = counts.clone();
            let offline = offline.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let path = request.uri().path().to_string();
                    // Taken offline, these CRLs' requests get no
                    // answer: hyper closes the connection on the error.
                    let unanswered = offline.load(Ordering::SeqCst)
                        && (path == SHORT_CRL_PATH || path == OUTAGE_CRL_PATH);
                    if let Ok(mut counts) = counts.lock() {
                        *counts.entry(path.clone()).or_insert(0) += 1;
                    }
                    let response = match path.as_str() {
                        "/huge.crl" => {
                            // 50 MiB in 64 KiB frames, without a length, so
                            // that only the reader's own cap stops it.
                            let chunk = Bytes::from(vec![0x30u8; 64 * 1024]);
                            let frames = futures_util::stream::iter(
                                (0..HUGE_CRL_BYTES / chunk.len())
                                    .map(move |_| Ok(Frame::data(chunk.clone()))),
                            );
                            hyper::Response::new(BodyExt::boxed(StreamBody::new(frames)))
                        }
                        "/garbage" => super::full(200, "this is not DER at all \u{1}\u{2}"),
                        other => match crls.get(other) {
                            Some(body) => super::full(200, body.clone()),
                            None => super::full(404, "no such CRL\n"),
                        },
                    };
                    async move {
                        if unanswered {
                            Err(std::io::Error::other("CRL host offline"))
                        } else {
                            Ok::<hyper::Response<BoxedBody>, std::io::Error>(response)
                        }
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// The DER of a certificate, for assertions.
pub fn der_of(cert: &Certificate) -> CertificateDer<'static> {
    cert.der().clone()
}
