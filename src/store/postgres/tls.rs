//! TLS to PostgreSQL, with libpq's meanings of `sslmode`: `disable` never encrypts; `prefer`
//! (the default) and `require` encrypt without checking the server's certificate (so a
//! server's self-signed certificate works, as with `psql`), unless `PGSSLROOTCERT` names a CA
//! file; `verify-ca` and `verify-full` check the certificate chain and the host name against
//! `PGSSLROOTCERT`, or the system's trust store when it is unset.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{Result, StoreError};

/// The client's settings from `url` and the TLS connector its `sslmode` asks for.
pub(super) fn configure(url: &str) -> Result<(postgres::Config, MakeRustlsConnect)> {
    // The client knows disable, prefer and require; the verifying modes are `require` with
    // certificates checked.
    let verify = ["sslmode=verify-full", "sslmode=verify-ca"]
        .iter()
        .any(|m| url.contains(m));
    let url = url
        .replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require")
        .replace("sslmode=allow", "sslmode=prefer");
    let config: postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Database(format!("database URL: {e}")))?;
    let roots = std::env::var_os("PGSSLROOTCERT");
    Ok((config, connector(verify || roots.is_some(), roots)?))
}

fn tls_error(e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Database(format!("database TLS: {e}"))
}

fn connector(verify: bool, roots: Option<std::ffi::OsString>) -> Result<MakeRustlsConnect> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match (verify, roots) {
        (false, _) => rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(
                rustls::crypto::ring::default_provider(),
            )))
            .with_no_client_auth(),
        (true, Some(path)) => {
            let mut store = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&path).map_err(|e| tls_error(&e))? {
                store
                    .add(cert.map_err(|e| tls_error(&e))?)
                    .map_err(|e| tls_error(&e))?;
            }
            rustls::ClientConfig::builder()
                .with_root_certificates(store)
                .with_no_client_auth()
        }
        (true, None) => {
            use rustls_platform_verifier::ConfigVerifierExt;
            rustls::ClientConfig::with_platform_verifier().map_err(|e| tls_error(&e))?
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Accepts the server's certificate without checking who issued it or whom it names (libpq's
/// `prefer` and `require`), but still checks that the server holds its key.
#[derive(Debug)]
struct EncryptOnly(rustls::crypto::CryptoProvider);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
