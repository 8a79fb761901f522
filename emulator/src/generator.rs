//! `--generate N`: a plausible, reproducible tenant (same N, domain and seed → same tenant).

use std::collections::HashSet;

use base64::Engine;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::fixture::{DEFAULT_ROLES, derived_guid, domain_object};
use crate::names::{CULTURES, Culture, PARTNER_DOMAINS, SERVICE_ACCOUNTS};
use crate::props::*;
use crate::tenant::{Application, TenantSpec};
use crate::time::iso_z;
use crate::user::User;

pub const DEFAULT_TENANT_ID: &str = "7d6f3c2a-1b4e-4f8a-9c5d-2e1f0a9b8c7d";
pub const DEFAULT_CLIENT_ID: &str = "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c";
pub const DEFAULT_CLIENT_SECRET: &str = "emulator-client-secret";

#[derive(Clone, Debug)]
pub struct GenerateSpec {
    pub count: usize,
    pub domain: String,
    pub seed: u64,
    pub tenant_id: String,
    /// First label of `<name>.onmicrosoft.com`; derived from the domain when `None`.
    pub tenant_name: Option<String>,
}

/// The kinds of generated accounts. Counts are exact (see [`Shares::for_count`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Member,
    Disabled,
    ProxyOnly,
    NoMail,
    AliasMail,
    Guest,
    Resource,
    InitialDomain,
}

/// How many of N generated users fall in each group (integer shares, rounded down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shares {
    pub guests: usize,
    pub resource_like: usize,
    pub initial_domain: usize,
    pub disabled: usize,
    pub proxy_only: usize,
    pub no_mail: usize,
    pub alias_mail: usize,
    pub immutable_id: usize,
}

impl Shares {
    pub fn for_count(n: usize) -> Shares {
        Shares {
            guests: n * 3 / 100,
            resource_like: n * 2 / 100,
            initial_domain: n / 100,
            disabled: n * 5 / 100,
            proxy_only: n * 5 / 100,
            no_mail: n * 2 / 100,
            alias_mail: n * 3 / 100,
            immutable_id: n / 100,
        }
    }
}

pub fn tenant_name_for(domain: &str) -> String {
    let label: String = domain
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    if label.is_empty() {
        "emulator".into()
    } else {
        label
    }
}

fn guid(rng: &mut ChaCha8Rng) -> String {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn pick_culture(rng: &mut ChaCha8Rng) -> &'static Culture {
    let mut r = rng.random_range(0..100);
    for c in CULTURES {
        if r < c.percent {
            return c;
        }
        r -= c.percent;
    }
    &CULTURES[0]
}

fn unique(used: &mut HashSet<String>, base: &str, domain: &str) -> String {
    let mut candidate = base.to_string();
    let mut n = 2;
    while !used.insert(format!("{candidate}@{domain}")) {
        candidate = format!("{base}{n}");
        n += 1;
    }
    candidate
}

/// Build the tenant.
pub fn generate(spec: &GenerateSpec, client_id: &str, client_secret: &str) -> TenantSpec {
    let n = spec.count;
    let domain = spec.domain.to_ascii_lowercase();
    let name = spec
        .tenant_name
        .clone()
        .unwrap_or_else(|| tenant_name_for(&domain));
    let initial = format!("{name}.onmicrosoft.com");
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);

    let shares = Shares::for_count(n);
    let mut kinds = Vec::with_capacity(n);
    kinds.extend(std::iter::repeat_n(Kind::Guest, shares.guests));
    kinds.extend(std::iter::repeat_n(Kind::Resource, shares.resource_like));
    kinds.extend(std::iter::repeat_n(
        Kind::InitialDomain,
        shares.initial_domain,
    ));
    kinds.extend(std::iter::repeat_n(Kind::Disabled, shares.disabled));
    kinds.extend(std::iter::repeat_n(Kind::ProxyOnly, shares.proxy_only));
    kinds.extend(std::iter::repeat_n(Kind::NoMail, shares.no_mail));
    kinds.extend(std::iter::repeat_n(Kind::AliasMail, shares.alias_mail));
    kinds.resize(n, Kind::Member);
    kinds.shuffle(&mut rng);

    // Immutable IDs go to people in the domain (not guests, rooms or onmicrosoft accounts).
    let mut eligible: Vec<usize> = (0..n)
        .filter(|&i| !matches!(kinds[i], Kind::Guest | Kind::Resource | Kind::InitialDomain))
        .collect();
    eligible.shuffle(&mut rng);
    let mut immutable = vec![false; n];
    for &i in eligible.iter().take(shares.immutable_id) {
        immutable[i] = true;
    }

    let mut used = HashSet::with_capacity(n);
    let mut users = Vec::with_capacity(n);
    let mut first_immutable = true;
    let mut service_accounts = SERVICE_ACCOUNTS.iter();
    let mut resource_no = 0usize;
    let created_base: i64 = 1_546_300_800; // 2019-01-01
    for (i, kind) in kinds.iter().enumerate() {
        let mut u = User::new(&guid(&mut rng));
        let c = pick_culture(&mut rng);
        let (fam, fam_r) = *pick(&mut rng, c.families);
        let (giv, giv_r) = *pick(&mut rng, c.givens);
        let display = match c.family_first {
            Some(sep) => format!("{fam}{sep}{giv}"),
            None => format!("{giv} {fam}"),
        };
        let local_base = format!("{giv_r}.{fam_r}");
        u.set_s(
            CREATED,
            Some(&iso_z(created_base + rng.random_range(0..157_680_000))),
        );
        u.set_s(USER_TYPE, Some("Member"));
        u.enabled = Some(true);
        match kind {
            Kind::Guest => {
                let partner = *pick(&mut rng, PARTNER_DOMAINS);
                let local = unique(&mut used, &local_base, partner);
                let ext = format!("{}_{}#EXT#@{initial}", local, partner);
                let mail = format!("{local}@{partner}");
                u.set_s(UPN, Some(&ext));
                u.set_s(DISPLAY_NAME, Some(&display));
                u.set_s(GIVEN_NAME, Some(giv));
                u.set_s(SURNAME, Some(fam));
                u.set_s(MAIL, Some(&mail));
                u.set_s(MAIL_NICKNAME, Some(&format!("{local}_{partner}#EXT#")));
                u.set_s(USER_TYPE, Some("Guest"));
                u.set_s(COMPANY_NAME, Some(partner));
                u.set_list(PROXY_ADDRESSES, &[&format!("SMTP:{mail}")]);
                u.set_list(OTHER_MAILS, &[&mail]);
                users.push(u);
                continue;
            }
            Kind::Resource => {
                resource_no += 1;
                let (disp, local) = resource_name(&mut rng, resource_no);
                let local = unique(&mut used, &local, &domain);
                let upn = format!("{local}@{domain}");
                u.set_s(UPN, Some(&upn));
                u.set_s(DISPLAY_NAME, Some(&disp));
                u.set_s(MAIL, Some(&upn));
                u.set_s(MAIL_NICKNAME, Some(&local));
                u.set_list(PROXY_ADDRESSES, &[&format!("SMTP:{upn}")]);
                u.enabled = Some(false);
                users.push(u);
                continue;
            }
            _ => {}
        }
        let (dom, local) = if *kind == Kind::InitialDomain {
            match service_accounts.next() {
                Some((local, disp)) => {
                    used.insert(format!("{local}@{initial}"));
                    u.set_s(DISPLAY_NAME, Some(disp));
                    u.set_s(MAIL_NICKNAME, Some(local));
                    let upn = format!("{local}@{initial}");
                    u.set_s(UPN, Some(&upn));
                    u.set_s(MAIL, Some(&upn));
                    u.set_list(PROXY_ADDRESSES, &[&format!("SMTP:{upn}")]);
                    users.push(u);
                    continue;
                }
                None => (initial.as_str(), unique(&mut used, &local_base, &initial)),
            }
        } else {
            (domain.as_str(), unique(&mut used, &local_base, &domain))
        };
        let upn = format!("{local}@{dom}");
        u.set_s(UPN, Some(&upn));
        u.set_s(DISPLAY_NAME, Some(&display));
        u.set_s(GIVEN_NAME, Some(giv));
        u.set_s(SURNAME, Some(fam));
        u.set_s(MAIL_NICKNAME, Some(&local.replace('\'', "")));
        match kind {
            Kind::ProxyOnly => {
                u.set_list(
                    PROXY_ADDRESSES,
                    &[&format!("SMTP:{upn}"), &format!("smtp:{local}@{initial}")],
                );
            }
            Kind::NoMail => {}
            Kind::AliasMail => {
                let alias = format!("{}.{}@{dom}", &giv_r[..1], fam_r);
                u.set_s(MAIL, Some(&alias));
                u.set_list(
                    PROXY_ADDRESSES,
                    &[&format!("SMTP:{alias}"), &format!("smtp:{upn}")],
                );
            }
            _ => {
                u.set_s(MAIL, Some(&upn));
                if rng.random_range(0..5) == 0 {
                    u.set_list(
                        PROXY_ADDRESSES,
                        &[&format!("SMTP:{upn}"), &format!("smtp:{local}@{initial}")],
                    );
                } else {
                    u.set_list(PROXY_ADDRESSES, &[&format!("SMTP:{upn}")]);
                }
            }
        }
        if *kind == Kind::Disabled {
            u.enabled = Some(false);
        }
        if rng.random_range(0..100) < 85 {
            u.set_s(JOB_TITLE, Some(*pick(&mut rng, c.titles)));
        }
        if rng.random_range(0..100) < 90 {
            u.set_s(DEPARTMENT, Some(*pick(&mut rng, c.departments)));
        }
        if rng.random_range(0..100) < 60 {
            u.set_s(OFFICE_LOCATION, Some(*pick(&mut rng, c.offices)));
        }
        if rng.random_range(0..100) < 70 {
            let phone = format!("{} {:04}", c.phone_prefix, rng.random_range(0..10_000));
            u.set_list(BUSINESS_PHONES, &[&phone]);
        }
        if rng.random_range(0..100) < 40 {
            let phone = format!("{} {:04}", c.phone_prefix, rng.random_range(0..10_000));
            u.set_s(MOBILE_PHONE, Some(&phone));
        }
        if rng.random_range(0..100) < 80 {
            u.set_s(PREFERRED_LANGUAGE, Some(c.locale));
        }
        if rng.random_range(0..100) < 95 {
            u.set_s(USAGE_LOCATION, Some(c.country));
        }
        if rng.random_range(0..100) < 80 {
            u.set_s(EMPLOYEE_ID, Some(&format!("E{:06}", i + 1)));
        }
        if immutable[i] {
            let mut b = [0u8; 16];
            rng.fill_bytes(&mut b);
            if first_immutable {
                // The first one begins with '+', a CSV formula-injection case worth having.
                b[0] = 0xF8 | (b[0] & 0x03);
                first_immutable = false;
            }
            let id = base64::engine::general_purpose::STANDARD.encode(b);
            u.set_s(IMMUTABLE_ID, Some(&id));
        }
        users.push(u);
    }

    let mut default_domain = domain_object(&domain, false, true);
    default_domain["supportedServices"] =
        serde_json::json!(["Email", "OfficeCommunicationsOnline"]);
    // The tenant's administrators hold Global Administrator, as in a real tenant: an app
    // without a directory role of its own cannot change them (roles.rs).
    let admins: Vec<String> = users
        .iter()
        .filter(|u| {
            u.upn()
                .split_once('@')
                .is_some_and(|(l, d)| d == initial && (l == "admin" || l == "breakglass"))
        })
        .map(|u| u.id.to_string())
        .collect();
    let directory_roles = if admins.is_empty() {
        Vec::new()
    } else {
        vec![crate::roles::DirectoryRole {
            display_name: "Global Administrator".into(),
            role_template_id: crate::roles::GLOBAL_ADMINISTRATOR.into(),
            members: admins,
        }]
    };
    TenantSpec {
        directory_roles,
        tenant_id: spec.tenant_id.clone(),
        display_name: format!("{name} (emulated)"),
        initial_domain: initial.clone(),
        domains: vec![default_domain, domain_object(&initial, true, false)],
        applications: vec![Application {
            client_id: client_id.to_string(),
            display_name: "dirsync".into(),
            secrets: vec![client_secret.to_string()],
            certificates: Vec::new(),
            federated: Vec::new(),
            roles: DEFAULT_ROLES.iter().map(|s| s.to_string()).collect(),
            sp_object_id: derived_guid(&format!("sp/{client_id}")),
        }],
        users,
    }
}

fn resource_name(rng: &mut ChaCha8Rng, n: usize) -> (String, String) {
    match rng.random_range(0..6) {
        0 | 1 => {
            let floor = rng.random_range(1..30);
            (
                format!("Conference Room {floor}F"),
                format!("room-{floor}f-{n}"),
            )
        }
        2 => {
            let floor = rng.random_range(1..30);
            (
                format!("会議室 {floor}F-{n}"),
                format!("kaigishitsu-{floor}f-{n}"),
            )
        }
        3 => {
            let team = *pick(
                rng,
                &["Sales", "Support", "Info", "Billing", "Recruiting", "Press"],
            );
            (
                format!("Shared Mailbox - {team}"),
                format!("shared-{}-{n}", team.to_ascii_lowercase()),
            )
        }
        4 => (format!("Projector {n}"), format!("projector-{n}")),
        _ => (format!("Company Car {n}"), format!("car-{n}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: usize, seed: u64) -> GenerateSpec {
        GenerateSpec {
            count: n,
            domain: "example.com".into(),
            seed,
            tenant_id: DEFAULT_TENANT_ID.into(),
            tenant_name: None,
        }
    }

    #[test]
    fn deterministic_and_shares_exact() {
        let a = generate(&spec(2500, 7), "c", "s");
        let b = generate(&spec(2500, 7), "c", "s");
        assert_eq!(a.users, b.users);
        let c = generate(&spec(2500, 8), "c", "s");
        assert_ne!(a.users[0].id, c.users[0].id);
        let sh = Shares::for_count(2500);
        let guests = a
            .users
            .iter()
            .filter(|u| u.s(USER_TYPE) == Some("Guest"))
            .count();
        assert_eq!(guests, sh.guests);
        assert!(
            a.users
                .iter()
                .filter(|u| u.s(USER_TYPE) == Some("Guest"))
                .all(|u| u.upn().contains("#EXT#@example.onmicrosoft.com"))
        );
        let res = a
            .users
            .iter()
            .filter(|u| u.enabled == Some(false) && u.s(GIVEN_NAME).is_none())
            .count();
        assert_eq!(res, sh.resource_like);
        let disabled = a
            .users
            .iter()
            .filter(|u| u.enabled == Some(false) && u.s(GIVEN_NAME).is_some())
            .count();
        assert_eq!(disabled, sh.disabled);
        let imm: Vec<_> = a.users.iter().filter_map(|u| u.s(IMMUTABLE_ID)).collect();
        assert_eq!(imm.len(), sh.immutable_id);
        assert!(imm.iter().any(|s| s.starts_with('+')));
        assert!(
            a.users
                .iter()
                .any(|u| u.s(DISPLAY_NAME).is_some_and(|d| d.contains('山')))
        );
        let mut upns: Vec<_> = a.users.iter().map(|u| u.upn().to_lowercase()).collect();
        upns.sort();
        upns.dedup();
        assert_eq!(upns.len(), 2500);
    }
}
