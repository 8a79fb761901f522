//! `client_assertion` checks: a JWT signed by an application certificate, or a federated
//! token (workload identity) verified against its issuer's published keys.

use http::StatusCode;

use crate::http::{Ctx, Resp, aad_error};
use crate::jwt::{Jws, PublicKey};
use crate::state::AppState;
use crate::tenant::{Application, Tenant};
use crate::time;

const CERT_DOC: &str = "Review the documentation at https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials .";
const WIF_DOC: &str = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation";

fn unauthorized(ctx: &Ctx, code: u32, msg: &str) -> Resp {
    aad_error(ctx, StatusCode::UNAUTHORIZED, "invalid_client", code, msg)
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn time_range_error(ctx: &Ctx, jws: &Jws) -> Option<Resp> {
    let exp = jws.claim_i64("exp");
    let nbf = jws.claim_i64("nbf").or(jws.claim_i64("iat"));
    let expired = exp.is_none_or(|e| e <= ctx.now);
    let early = nbf.is_some_and(|n| n > ctx.now + 300);
    if expired || early {
        let fmt = |t: Option<i64>| t.map(time::iso_z).unwrap_or_else(|| "(none)".into());
        return Some(unauthorized(
            ctx,
            700024,
            &format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. {CERT_DOC}",
                time::iso_z(ctx.now),
                fmt(nbf),
                fmt(exp)
            ),
        ));
    }
    None
}

/// Check a client assertion for `app`; `Ok(())` means the client is authenticated.
pub async fn verify(
    state: &AppState,
    ctx: &Ctx,
    tenant: &Tenant,
    tenant_segment: &str,
    app: &Application,
    assertion: &str,
) -> Result<(), Resp> {
    let Some(jws) = Jws::parse(assertion) else {
        return Err(aad_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        ));
    };
    let iss = jws.claim_str("iss").unwrap_or_default().to_string();
    if iss.eq_ignore_ascii_case(&app.client_id) {
        verify_certificate(ctx, tenant, tenant_segment, app, &jws)
    } else {
        verify_federated(state, ctx, app, &jws, &iss).await
    }
}

fn verify_certificate(
    ctx: &Ctx,
    tenant: &Tenant,
    seg: &str,
    app: &Application,
    jws: &Jws,
) -> Result<(), Resp> {
    let sub = jws.claim_str("sub").unwrap_or_default();
    if !sub.eq_ignore_ascii_case(&app.client_id) {
        return Err(unauthorized(
            ctx,
            700021,
            &format!(
                "Client assertion application identifier doesn't match 'client_id' parameter. {CERT_DOC}"
            ),
        ));
    }
    // The audience is this emulator's token endpoint, under the tenant id or any of its domains.
    let mut names = vec![tenant.id.clone(), seg.to_string()];
    names.extend(
        tenant
            .domains
            .iter()
            .filter_map(|d| d["id"].as_str().map(str::to_string)),
    );
    let aud_ok = jws.audiences().iter().any(|aud| {
        names.iter().any(|n| {
            [
                format!("{}/{n}/oauth2/v2.0/token", ctx.base_url),
                format!("{}/{n}/oauth2/token", ctx.base_url),
                format!("{}/{n}/v2.0", ctx.base_url),
            ]
            .iter()
            .any(|u| u.eq_ignore_ascii_case(aud))
        })
    });
    if !aud_ok {
        return Err(unauthorized(
            ctx,
            700023,
            &format!("Client assertion audience claim does not match Realm issuer. {CERT_DOC}"),
        ));
    }
    if let Some(r) = time_range_error(ctx, jws) {
        return Err(r);
    }
    let by_s256 = jws
        .header_str("x5t#S256")
        .and_then(crate::jwt::b64url_decode);
    let by_sha1 = jws.header_str("x5t").and_then(crate::jwt::b64url_decode);
    let cert = app.certificates.iter().find(|c| {
        by_s256.as_deref() == Some(c.sha256.as_slice())
            || by_sha1.as_deref() == Some(c.sha1.as_slice())
    });
    let Some(cert) = cert else {
        let thumb = by_s256
            .or(by_sha1)
            .map(|t| hex_upper(&t))
            .unwrap_or_default();
        return Err(unauthorized(
            ctx,
            700027,
            &format!(
                "Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '{thumb}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.]",
                app.client_id
            ),
        ));
    };
    let alg = jws.alg();
    let key = PublicKey::RsaDer(cert.rsa_public_key.clone());
    if !matches!(alg, "RS256" | "PS256")
        || !key.verify(alg, jws.signing_input.as_bytes(), &jws.signature)
    {
        return Err(unauthorized(
            ctx,
            7000274,
            "Key was found, but use of the key to verify the signature failed.",
        ));
    }
    Ok(())
}

async fn verify_federated(
    state: &AppState,
    ctx: &Ctx,
    app: &Application,
    jws: &Jws,
    iss: &str,
) -> Result<(), Resp> {
    let sub = jws.claim_str("sub").unwrap_or_default();
    let auds = jws.audiences();
    let no_match = |code: u32, what: &str, value: &str| {
        unauthorized(
            ctx,
            code,
            &format!(
                "No matching federated identity record found for presented assertion {what} '{value}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. {WIF_DOC}"
            ),
        )
    };
    // Matching is case-sensitive, as Entra's is.
    let by_issuer: Vec<_> = app.federated.iter().filter(|f| f.issuer == iss).collect();
    if by_issuer.is_empty() {
        return Err(no_match(700211, "issuer", iss));
    }
    let by_subject: Vec<_> = by_issuer.into_iter().filter(|f| f.subject == sub).collect();
    if by_subject.is_empty() {
        return Err(no_match(700213, "subject", sub));
    }
    if !by_subject
        .iter()
        .any(|f| f.audiences.iter().any(|a| auds.contains(a)))
    {
        return Err(no_match(700212, "audience", &auds.join(",")));
    }
    if let Some(r) = time_range_error(ctx, jws) {
        return Err(r);
    }
    let kid = jws.header_str("kid");
    let alg = jws.alg();
    let mut verified = false;
    for refresh in [false, true] {
        let keys = match state.federation.keys(iss, refresh).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(issuer = iss, error = %e, "federated issuer keys unavailable");
                return Err(aad_error(
                    ctx,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    50166,
                    &format!("Request to External OIDC endpoint failed. [{e}]"),
                ));
            }
        };
        verified = keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .any(|k| {
                k.key
                    .verify(alg, jws.signing_input.as_bytes(), &jws.signature)
            });
        if verified {
            break;
        }
    }
    if !verified {
        return Err(unauthorized(
            ctx,
            700027,
            &format!(
                "Client assertion failed signature validation. [Reason - The key was not found., Issuer '{iss}']"
            ),
        ));
    }
    Ok(())
}
