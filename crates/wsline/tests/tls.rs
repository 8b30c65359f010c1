//! TLS on both sides: the caller's own rustls configuration on the client
//! (roots in memory, a client certificate for mTLS), `tls::server_config`
//! from PEM files on the server, and TLS failures that keep their cause.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use support::within;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use wsline::proto::Message;
use wsline::{ClientConfig, Error};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An echo server over TLS; each connection's failure is ignored (some
/// tests expect the handshake to fail).
async fn wss_echo(acceptor: TlsAcceptor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let tls = acceptor.accept(tcp).await?;
                let mut ws = wsline::accept(tls, &Default::default()).await?;
                while let Some(msg) = ws.recv().await {
                    ws.send(msg?).await?;
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            });
        }
    });
    addr
}

/// A self-signed certificate for 127.0.0.1: (its DER, its PEM, the key's PEM,
/// the key's DER).
fn self_signed() -> (
    CertificateDer<'static>,
    String,
    String,
    PrivatePkcs8KeyDer<'static>,
) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    (
        certified.cert.der().clone(),
        certified.cert.pem(),
        certified.key_pair.serialize_pem(),
        key,
    )
}

fn server_with(cert: CertificateDer<'static>, key: PrivatePkcs8KeyDer<'static>) -> TlsAcceptor {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// Roots holding only `cert`, in memory.
fn roots_of(cert: CertificateDer<'static>) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    roots
}

async fn echo_once(url: &str, config: &ClientConfig) -> Result<(), Error> {
    let (mut ws, _) = within("connect", wsline::connect_with(url, config)).await?;
    ws.send(Message::text("over tls")).await?;
    let back = within("the echo", ws.recv()).await.expect("a message")?;
    assert_eq!(back, Message::text("over tls"));
    ws.close(wsline::proto::CloseCode::NORMAL, "").await?;
    Ok(())
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsline-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_error_that_keeps_its_rustls_cause() {
    let (cert, _, _, key) = self_signed();
    let addr = wss_echo(server_with(cert, key)).await;
    let mut config = ClientConfig::default();
    config.tls.no_platform_roots = true;
    let err = within(
        "connect",
        wsline::connect_with(&format!("wss://{addr}/"), &config),
    )
    .await
    .expect_err("an untrusted certificate must be refused");
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept: {err:?}"
    );
    assert_eq!(
        err.rustls_error(),
        Some(&rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer
        )),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("ca_file"), "says what to do: {text}");
}

#[tokio::test]
async fn the_callers_rustls_config_with_roots_in_memory_is_used_as_given() {
    let (cert, _, _, key) = self_signed();
    let addr = wss_echo(server_with(cert.clone(), key)).await;
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots_of(cert))
        .with_no_client_auth();
    let mut config = ClientConfig::default();
    config.tls.config = Some(Arc::new(tls));
    // Ignored when a configuration is given: it would refuse the server.
    config.tls.no_platform_roots = true;
    echo_once(&format!("wss://{addr}/"), &config).await.unwrap();
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate_from_the_callers_config() {
    // A CA that signs the client's certificate; the server requires one.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params = rcgen::CertificateParams::new(vec!["client".to_owned()]).unwrap();
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();

    let (server_cert, _, _, server_key) = self_signed();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots_of(ca.der().clone())),
        provider(),
    )
    .build()
    .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert.clone()], server_key.into())
        .unwrap();
    let addr = wss_echo(TlsAcceptor::from(Arc::new(server))).await;
    let url = format!("wss://{addr}/");

    let builder = || {
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots_of(server_cert.clone()))
    };
    let mut config = ClientConfig::default();
    config.tls.config = Some(Arc::new(builder().with_no_client_auth()));
    assert!(
        echo_once(&url, &config).await.is_err(),
        "without a client certificate the server refuses"
    );

    let key = PrivatePkcs8KeyDer::from(client_key.serialize_der());
    let with_cert = builder()
        .with_client_auth_cert(vec![client_cert.der().clone()], key.into())
        .unwrap();
    config.tls.config = Some(Arc::new(with_cert));
    echo_once(&url, &config).await.unwrap();
}

#[tokio::test]
async fn server_config_from_pem_files_serves_wss() {
    let (_, cert_pem, key_pem, _) = self_signed();
    let cert = temp_file("pem-cert.pem", &cert_pem);
    let key = temp_file("pem-key.pem", &key_pem);
    let server = wsline::tls::server_config(&cert, &key).unwrap();
    assert_eq!(server.alpn_protocols, vec![b"http/1.1".to_vec()]);
    let addr = wss_echo(TlsAcceptor::from(server)).await;
    let mut config = ClientConfig::default();
    config.tls.ca_file = Some(cert.clone());
    echo_once(&format!("wss://{addr}/"), &config).await.unwrap();
}

#[tokio::test]
async fn server_config_names_the_file_that_is_wrong() {
    let (_, cert_pem, _, _) = self_signed();
    let (_, _, other_key_pem, _) = self_signed();
    let cert = temp_file("mismatch-cert.pem", &cert_pem);
    let key = temp_file("mismatch-key.pem", &other_key_pem);
    let err = wsline::tls::server_config(&cert, &key).expect_err("the key does not fit");
    assert!(err.to_string().contains("does not fit"), "{err}");
    assert!(err.rustls_error().is_some(), "{err:?}");

    let no_key = temp_file("no-key.pem", &cert_pem);
    let err = wsline::tls::server_config(&cert, &no_key).expect_err("no key in the file");
    assert!(err.to_string().contains("no-key.pem"), "{err}");
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");
}
