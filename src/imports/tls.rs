//! HTTPS for everything an import reaches (the document's URL, the base
//! URL, an MCP server's URL, an OAuth2 token URL): rustls with the `ring`
//! provider, the system's roots (through the platform verifier), and the
//! roots of an optional `--ca-cert` PEM file, for servers whose CA is the
//! operator's own.

use std::sync::Once;

use anyhow::Context;

/// Installs the process's TLS provider (once; later calls do nothing).
/// Every HTTP client of the process needs it: the binary installs it first
/// thing, and so does [`crate::server::start`] for a hub embedded in
/// another program.
pub fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only when another provider is installed already: then that one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client builder trusting the system's roots and, when given, the
/// certificates of `ca_pem` (PEM text) too.
pub fn client(ca_pem: Option<&str>) -> anyhow::Result<reqwest::ClientBuilder> {
    install_provider();
    let mut builder = reqwest::Client::builder();
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .context("the CA certificates (--ca-cert) are not valid PEM")?;
        if certs.is_empty() {
            anyhow::bail!("the CA certificates (--ca-cert) hold no PEM certificate");
        }
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder)
}

/// The PEM text of the `--ca-cert` file at `path`, checked.
pub fn read_ca_cert(path: &str) -> anyhow::Result<String> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("cannot read --ca-cert {path}"))?;
    client(Some(&pem))
        .and_then(|builder| Ok(builder.build()?))
        .with_context(|| format!("--ca-cert {path}"))?;
    Ok(pem)
}
