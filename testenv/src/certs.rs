//! Certificates for a local control plane (ECDSA P-256, as controller-runtime's envtest makes them).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

/// The PEM files written into `<run dir>/pki`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    /// The CA that signed the serving and client certificates.
    pub ca_crt: PathBuf,
    pub ca_pem: String,
    pub serving_crt: PathBuf,
    pub serving_key: PathBuf,
    pub admin_crt_pem: String,
    pub admin_key_pem: String,
    /// Service-account token signing key (PKCS#8) and its public key (SPKI).
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
}

fn dn(cn: &str, o: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = o {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

fn key() -> anyhow::Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating an ECDSA P-256 key")
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Generates the CA, the apiserver's serving certificate (IP SAN 127.0.0.1, DNS localhost), an
/// admin client certificate (CN=admin, O=system:masters) and a service-account signing key.
pub fn generate(dir: &Path) -> anyhow::Result<Pki> {
    std::fs::create_dir_all(dir)?;

    let ca_key = key()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = dn("dirsync-testenv-ca", Some("dirsync-testenv"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let serving_key = key()?;
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    p.distinguished_name = dn("localhost", None);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let serving = p.signed_by(&serving_key, &issuer)?;

    let admin_key = key()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = dn("admin", Some("system:masters"));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    let admin = p.signed_by(&admin_key, &issuer)?;

    let sa = key()?;

    let pki = Pki {
        dir: dir.to_path_buf(),
        ca_crt: dir.join("ca.crt"),
        ca_pem,
        serving_crt: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        admin_crt_pem: admin.pem(),
        admin_key_pem: admin_key.serialize_pem(),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
    };
    write(&pki.ca_crt, &pki.ca_pem)?;
    write(&pki.serving_crt, &serving.pem())?;
    write(&pki.serving_key, &serving_key.serialize_pem())?;
    write(&dir.join("admin.crt"), &pki.admin_crt_pem)?;
    write(&dir.join("admin.key"), &pki.admin_key_pem)?;
    write(&pki.sa_key, &sa.serialize_pem())?;
    write(&pki.sa_pub, &sa.public_key_pem())?;
    Ok(pki)
}
