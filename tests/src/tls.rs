//! Certificates made per test (a CA and the leaves it signs, with rcgen)
//! and a TLS client that reports what the handshake chose: the protocol
//! (ALPN) and the server's certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A certificate authority that exists only for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM and DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Leaf {
        self.leaf(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// Writes the CA certificate to `dir/<stem>.pem`.
    pub fn write(&self, dir: &Path, stem: &str) -> PathBuf {
        let path = dir.join(format!("{stem}.pem"));
        std::fs::write(&path, self.pem()).unwrap();
        path
    }

    /// A client config trusting only this CA, offering `alpn`.
    pub fn client_config(&self, client_cert: Option<&Leaf>, alpn: &[&str]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match client_cert {
            Some(leaf) => builder
                .with_client_auth_cert(vec![leaf.der.clone()], leaf.private_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

impl Leaf {
    /// Writes `dir/<stem>.crt` and `dir/<stem>.key`; their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }

    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }

    /// A rustls server config presenting this certificate, offering `alpn`.
    pub fn server_config(&self, alpn: &[&str]) -> Arc<rustls::ServerConfig> {
        self.server_config_for(None, alpn)
    }

    /// The same, requiring a client certificate `clients` issued.
    pub fn server_config_requiring(&self, clients: &TestCa, alpn: &[&str]) -> Arc<rustls::ServerConfig> {
        self.server_config_for(Some(clients), alpn)
    }

    fn server_config_for(&self, clients: Option<&TestCa>, alpn: &[&str]) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match clients {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.issuer.der().clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(vec![self.der.clone()], self.private_key())
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

/// One TLS connection, HTTP on top (HTTP/2 if ALPN chose it).
pub struct TlsSession {
    /// The protocol ALPN chose, if any.
    pub alpn: Option<String>,
    /// The certificate the server presented (on a resumed session: the one
    /// it presented when the session began).
    pub server_certificate: CertificateDer<'static>,
    /// Whether the handshake resumed an earlier session.
    pub resumed: bool,
    sender: Sender,
}

enum Sender {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

impl TlsSession {
    /// Connects to `addr` with SNI `server_name`; fails as the handshake does.
    pub async fn connect(
        config: Arc<ClientConfig>,
        addr: SocketAddr,
        server_name: &str,
    ) -> std::io::Result<TlsSession> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(server_name.to_owned()).unwrap();
        let stream = TlsConnector::from(config).connect(name, tcp).await?;
        let (_, session) = stream.get_ref();
        let alpn = session.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
        let server_certificate = session.peer_certificates().expect("a server certificate")[0].clone();
        let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let io = TokioIo::new(stream);
        let sender = if alpn.as_deref() == Some("h2") {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(connection);
            Sender::Http2(sender)
        } else {
            let (sender, connection) = http1::handshake(io).await.map_err(std::io::Error::other)?;
            tokio::spawn(connection);
            Sender::Http1(sender)
        };
        Ok(TlsSession {
            alpn,
            server_certificate,
            resumed,
            sender,
        })
    }

    /// `GET path`: the response's version, status and body.
    pub async fn get(&mut self, path: &str) -> Result<(Version, StatusCode, Bytes), hyper::Error> {
        let request = |version| {
            Request::get(format!("https://localhost{path}"))
                .version(version)
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request(Version::HTTP_11)).await?
            }
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request(Version::HTTP_2)).await?
            }
        };
        let (version, status) = (response.version(), response.status());
        let body = response.into_body().collect().await?.to_bytes();
        Ok((version, status, body))
    }
}
