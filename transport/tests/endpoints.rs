//! Loopback tests of quay-transport: real endpoints on 127.0.0.1, every await under a timeout.

use std::path::{Path, PathBuf};

use quay_transport::quinn::crypto::rustls::HandshakeData;
use quay_transport::{
    CertificateError, CertificateHash, ClientBuilder, Connection, ConnectionError, Endpoint,
    Identity, ServerBuilder, Trust,
};

mod common;
use common::bounded;

fn server(identity: Identity) -> Endpoint {
    ServerBuilder::new(identity)
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap()
}

/// Connects a client with `trust` to `server`; the server side accepts (or fails) in the
/// background so a refused handshake does not leave it waiting.
async fn connect(server: &Endpoint, trust: Trust) -> Result<Connection, ConnectionError> {
    let client = ClientBuilder::new().trust(trust).build().unwrap();
    let accept = {
        let server = server.clone();
        tokio::spawn(async move {
            let incoming = server.accept().await?;
            incoming.await.ok()
        })
    };
    let connecting = client
        .connect(server.local_addr().unwrap(), "localhost")
        .unwrap();
    let result = bounded(connecting).await;
    if result.is_err() {
        accept.abort();
    }
    result
}

/// A certificate made by rcgen with any algorithm and validity, loaded like a user's PEM files.
struct Generated {
    _dir: tempfile::TempDir,
    identity: Identity,
}

fn generate(
    algorithm: &'static rcgen::SignatureAlgorithm,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Generated {
    let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = not_before;
    params.not_after = not_after;
    let certificate = params.self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certificate_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&certificate_path, certificate.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let identity = Identity::from_pem_files(&certificate_path, &key_path).unwrap();
    Generated {
        _dir: dir,
        identity,
    }
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

/// The reason a refused handshake gives, as a user sees it.
async fn refusal(identity: Identity, trust: Trust) -> String {
    let server = server(identity);
    match connect(&server, trust).await {
        Ok(_) => panic!("the client accepted a certificate it must refuse"),
        Err(error) => error.to_string(),
    }
}

fn pinned(identity: &Identity) -> Trust {
    Trust::CertificateHashes(vec![identity.certificate_hash()])
}

#[tokio::test]
async fn pinned_hash_connects_and_exchanges_a_stream_and_a_datagram() {
    let identity = Identity::self_signed(["localhost"]).unwrap();
    let trust = pinned(&identity);
    let server = server(identity);
    let echo = {
        let server = server.clone();
        tokio::spawn(async move {
            let connection = bounded(server.accept()).await.unwrap().await.unwrap();
            let (mut send, mut recv) = bounded(connection.accept_bi()).await.unwrap();
            let request = bounded(recv.read_to_end(1024)).await.unwrap();
            send.write_all(&request).await.unwrap();
            send.finish().unwrap();
            let datagram = bounded(connection.read_datagram()).await.unwrap();
            connection.send_datagram(datagram).unwrap();
            bounded(connection.closed()).await;
        })
    };
    let connection = connect(&server, trust).await.unwrap();
    assert_eq!(
        connection
            .handshake_data()
            .unwrap()
            .downcast::<HandshakeData>()
            .unwrap()
            .protocol
            .as_deref(),
        Some(&b"h3"[..]),
        "ALPN h3 is negotiated by default"
    );
    let (mut send, mut recv) = bounded(connection.open_bi()).await.unwrap();
    send.write_all(b"over a stream").await.unwrap();
    send.finish().unwrap();
    assert_eq!(
        bounded(recv.read_to_end(1024)).await.unwrap(),
        b"over a stream"
    );

    assert!(connection.max_datagram_size().is_some(), "datagrams are on");
    connection.send_datagram("as a datagram".into()).unwrap();
    assert_eq!(
        bounded(connection.read_datagram()).await.unwrap(),
        "as a datagram"
    );
    connection.close(0u32.into(), b"done");
    bounded(echo).await.unwrap();
}

#[tokio::test]
async fn pinning_refuses_a_wrong_hash() {
    let identity = Identity::self_signed(["localhost"]).unwrap();
    let other = CertificateHash::of(b"some other certificate");
    let reason = refusal(identity, Trust::CertificateHashes(vec![other])).await;
    assert!(
        reason.contains("is not one of the pinned hashes"),
        "{reason}"
    );
}

#[tokio::test]
async fn pinning_refuses_an_rsa_certificate() {
    let now = time::OffsetDateTime::now_utc();
    let rsa = generate(&rcgen::PKCS_RSA_SHA256, now - days(1), now + days(12));
    let trust = pinned(&rsa.identity);
    let reason = refusal(rsa.identity, trust).await;
    assert!(reason.contains("non-ECDSA key"), "{reason}");
}

#[tokio::test]
async fn pinning_refuses_a_certificate_valid_for_30_days() {
    let now = time::OffsetDateTime::now_utc();
    let long = generate(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        now - days(1),
        now + days(29),
    );
    let trust = pinned(&long.identity);
    let reason = refusal(long.identity, trust).await;
    assert!(reason.contains("longer than the 14 days"), "{reason}");
}

#[tokio::test]
async fn pinning_refuses_an_expired_certificate() {
    let now = time::OffsetDateTime::now_utc();
    let expired = generate(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        now - days(20),
        now - days(7),
    );
    let trust = pinned(&expired.identity);
    let reason = refusal(expired.identity, trust).await;
    assert!(reason.contains("has expired"), "{reason}");
}

#[tokio::test]
async fn pinning_refuses_a_certificate_not_valid_yet() {
    let now = time::OffsetDateTime::now_utc();
    let future = generate(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        now + days(1),
        now + days(10),
    );
    let trust = pinned(&future.identity);
    let reason = refusal(future.identity, trust).await;
    assert!(reason.contains("not valid yet"), "{reason}");
}

#[tokio::test]
async fn system_roots_refuse_a_self_signed_certificate() {
    let identity = Identity::self_signed(["localhost"]).unwrap();
    let reason = refusal(identity, Trust::SystemRoots).await;
    assert!(reason.contains("UnknownIssuer"), "{reason}");
}

#[tokio::test]
async fn explicit_roots_accept_a_self_signed_certificate() {
    let identity = Identity::self_signed(["localhost"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, identity.certificate_pem()).unwrap();
    let trust = Trust::roots_from_pem_file(&roots).unwrap();
    let server = server(identity);
    let connection = connect(&server, trust).await.unwrap();
    connection.close(0u32.into(), b"");
}

#[tokio::test]
async fn danger_mode_accepts_any_certificate() {
    let now = time::OffsetDateTime::now_utc();
    let expired = generate(&rcgen::PKCS_RSA_SHA256, now - days(400), now - days(1));
    let server = server(expired.identity);
    let connection = connect(&server, Trust::DangerAcceptAnyCertificate)
        .await
        .unwrap();
    connection.close(0u32.into(), b"");
}

#[tokio::test]
async fn pem_files_with_sec1_and_pkcs1_keys_serve_tls() {
    for (certificate, key) in [("ec.crt", "ec-sec1.key"), ("rsa.crt", "rsa-pkcs1.key")] {
        let identity = Identity::from_pem_files(data(certificate), data(key)).unwrap();
        let trust = Trust::roots_from_pem_file(data(certificate)).unwrap();
        let server = server(identity);
        let connection = connect(&server, trust).await.unwrap();
        connection.close(0u32.into(), b"");
    }
}

#[test]
fn spki_hashes_match_openssl() {
    // From the fixtures with OpenSSL: `openssl x509 -in F -pubkey -noout | openssl pkey -pubin
    // -outform der | openssl dgst -sha256 -binary | base64`.
    for (certificate, key, spki) in [
        (
            "ec.crt",
            "ec-sec1.key",
            "RBEZY+HgaAYEWrGr0DrD/ZeWIPDcabt6ksz8Kvf+Zhg=",
        ),
        (
            "rsa.crt",
            "rsa-pkcs1.key",
            "AvDHKAQpIuTcs1rJA1eQ+yGKpOtJHzjfcWCvgTgT+Fc=",
        ),
    ] {
        let identity = Identity::from_pem_files(data(certificate), data(key)).unwrap();
        assert_eq!(
            identity.spki_sha256_base64().as_deref(),
            Some(spki),
            "{certificate}"
        );
    }
    assert!(
        Identity::self_signed(["localhost"])
            .unwrap()
            .spki_sha256_base64()
            .is_some_and(|spki| spki.len() == 44)
    );
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn pem_error_for_a_missing_file_names_it() {
    let error = Identity::from_pem_files("/nonexistent/cert.pem", data("ec-sec1.key")).unwrap_err();
    assert!(matches!(error, CertificateError::Read { .. }), "{error:?}");
    assert!(
        error.to_string().contains("/nonexistent/cert.pem"),
        "{error}"
    );
    let error = Identity::from_pem_files(data("ec.crt"), "/nonexistent/key.pem").unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/key.pem"),
        "{error}"
    );
}

#[test]
fn pem_error_for_garbage_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, b"\x00\x01 this is not PEM at all").unwrap();
    let error = Identity::from_pem_files(&garbage, data("ec-sec1.key")).unwrap_err();
    assert!(
        matches!(error, CertificateError::NotPem { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("garbage.pem"), "{error}");
    let error = Identity::from_pem_files(data("ec.crt"), &garbage).unwrap_err();
    assert!(
        matches!(error, CertificateError::NotPem { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("garbage.pem"), "{error}");

    // A damaged PEM block (bad base64) is "not PEM" too.
    let damaged = dir.path().join("damaged.pem");
    std::fs::write(
        &damaged,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let error = Identity::from_pem_files(&damaged, data("ec-sec1.key")).unwrap_err();
    assert!(
        matches!(error, CertificateError::NotPem { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("damaged.pem"), "{error}");
}

#[test]
fn pem_error_for_a_file_without_the_expected_block() {
    // A key file given as the certificate, and a certificate given as the key.
    let error = Identity::from_pem_files(data("ec-sec1.key"), data("ec-sec1.key")).unwrap_err();
    assert!(
        matches!(error, CertificateError::NoCertificate { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("ec-sec1.key"), "{error}");
    let error = Identity::from_pem_files(data("ec.crt"), data("ec.crt")).unwrap_err();
    assert!(
        matches!(error, CertificateError::NoPrivateKey { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("ec.crt"), "{error}");
}

#[test]
fn pem_error_for_a_mismatched_key_names_both_files() {
    let error = Identity::from_pem_files(data("ec.crt"), data("rsa-pkcs1.key")).unwrap_err();
    assert!(
        matches!(error, CertificateError::KeyMismatch { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("rsa-pkcs1.key") && text.contains("ec.crt"),
        "{text}"
    );
}

/// `SSLKEYLOGFILE` is read when a configuration is built, so the handshake runs in a child
/// process (this test binary, filtered to `keylog_child`) started with the variable set.
#[test]
fn sslkeylogfile_receives_the_tls_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("keys.log");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "keylog_child", "--include-ignored", "--quiet"])
        .env("SSLKEYLOGFILE", &log)
        .env("QUAY_KEYLOG_CHILD", "1")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let secrets = std::fs::read_to_string(&log).unwrap();
    // Both sides log; each logs its handshake and traffic secrets (NSS key log format).
    assert!(
        secrets.matches("CLIENT_HANDSHAKE_TRAFFIC_SECRET ").count() >= 2,
        "{secrets}"
    );
    assert!(secrets.contains("SERVER_TRAFFIC_SECRET_0 "), "{secrets}");
}

#[tokio::test]
#[ignore = "run by sslkeylogfile_receives_the_tls_secrets in a child process"]
async fn keylog_child() {
    if std::env::var_os("QUAY_KEYLOG_CHILD").is_none() {
        return;
    }
    let identity = Identity::self_signed(["localhost"]).unwrap();
    let trust = pinned(&identity);
    let server = server(identity);
    let connection = connect(&server, trust).await.unwrap();
    connection.close(0u32.into(), b"");
    bounded(server.wait_idle()).await;
}
