//! A throwaway CA and a leaf certificate for 127.0.0.1/localhost, and the rustls server config.
//!
//! Python's ssl module rejects a self-signed leaf, so the CA (CA:TRUE) and the leaf
//! (CA:FALSE, serverAuth, SAN IP:127.0.0.1, IP:::1, DNS:localhost) are separate certificates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// CA and leaf, PEM and DER.
pub struct Pki {
    pub ca_pem: String,
    pub leaf_chain: Vec<CertificateDer<'static>>,
    pub leaf_key: PrivateKeyDer<'static>,
}

/// Generate a CA and a leaf signed by it. `extra_names` adds SANs (host names or IPs).
pub fn generate(extra_names: &[String]) -> Result<Pki, String> {
    let e = |x: rcgen::Error| x.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.distinguished_name
        .push(DnType::CommonName, "entra-emulator test CA");
    ca.distinguished_name
        .push(DnType::OrganizationName, "dirsync entra-emulator");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;

    let leaf_key = KeyPair::generate().map_err(e)?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).map_err(e)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    leaf.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    for n in extra_names {
        match n.parse::<IpAddr>() {
            Ok(ip) => leaf.subject_alt_names.push(SanType::IpAddress(ip)),
            Err(_) => leaf
                .subject_alt_names
                .push(SanType::DnsName(n.clone().try_into().map_err(e)?)),
        }
    }
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let issuer = Issuer::new(ca, ca_key);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(e)?;

    Ok(Pki {
        ca_pem: ca_cert.pem(),
        leaf_chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
        leaf_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    })
}

pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(pki.leaf_chain.clone(), pki.leaf_key.clone_key())
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
