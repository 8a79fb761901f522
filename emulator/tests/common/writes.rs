//! The tenant the write-side tests share: a managed, a federated and an unverified domain;
//! apps with and without `User.ReadWrite.All` and with directory roles; an administrator, a
//! helpdesk administrator, a user synced from AD, a guest and a federated user.

use serde_json::{Value, json};

use super::Emu;
use entra_emulator::Config;

pub const TENANT: &str = "bbbbbbbb-0000-4000-8000-000000000001";
pub const ALICE: &str = "00000000-0000-4000-8000-00000000000a";
pub const ADMIN: &str = "00000000-0000-4000-8000-00000000000b";
pub const HELPER: &str = "00000000-0000-4000-8000-00000000000c";
pub const SYNCED: &str = "00000000-0000-4000-8000-00000000000d";
pub const GUEST: &str = "00000000-0000-4000-8000-00000000000e";
pub const FED: &str = "00000000-0000-4000-8000-00000000000f";
pub const FED_IMMUTABLE: &str = "RDHiRneDPkiofrZ2nbYu7Q==";
pub const STRONG: &str = "xWwvJ]6NMw+bWH-d";

pub fn fixture() -> Value {
    json!({
        "tenantId": TENANT,
        "domains": [
            {"id": "contoso.example", "isDefault": true},
            {"id": "fed.contoso.example", "authenticationType": "Federated"},
            {"id": "pending.contoso.example", "isVerified": false}
        ],
        "applications": [
            {"clientId": "writer", "clientSecret": "s", "roles": ["User.ReadWrite.All", "Domain.Read.All"]},
            {"clientId": "reader", "clientSecret": "s"},
            {"clientId": "dirwriter", "clientSecret": "s", "roles": ["Directory.ReadWrite.All"]},
            {"clientId": "useradmin", "clientSecret": "s", "roles": ["User.ReadWrite.All"]},
            {"clientId": "globaladmin", "clientSecret": "s", "roles": ["User.ReadWrite.All"]}
        ],
        "directoryRoles": [
            {"displayName": "Global Administrator", "roleTemplateId": "62e90394-69f5-4237-9190-012177145e10",
             "members": ["admin@contoso.example", "globaladmin"]},
            {"displayName": "Helpdesk Administrator", "members": [HELPER]},
            {"displayName": "User Administrator", "members": ["useradmin"]}
        ],
        "users": [
            {"id": ALICE, "userPrincipalName": "alice@contoso.example", "displayName": "Alice Smith",
             "givenName": "Alice", "surname": "Smith", "mail": "alice@contoso.example",
             "proxyAddresses": ["SMTP:alice@contoso.example"], "accountEnabled": true,
             "userType": "Member", "mailNickname": "alice"},
            {"id": ADMIN, "userPrincipalName": "admin@contoso.example", "displayName": "Administrator",
             "accountEnabled": true, "userType": "Member"},
            {"id": HELPER, "userPrincipalName": "helper@contoso.example", "displayName": "Helpdesk",
             "accountEnabled": true, "userType": "Member"},
            {"id": SYNCED, "userPrincipalName": "ad.user@contoso.example", "displayName": "From AD",
             "accountEnabled": true, "userType": "Member", "onPremisesSyncEnabled": true,
             "onPremisesImmutableId": "c3luY2VkLWZyb20tYWQ="},
            {"id": GUEST, "userPrincipalName": "gail_partner.example#EXT#@contoso.onmicrosoft.com",
             "displayName": "Gail (partner)", "accountEnabled": true, "userType": "Guest",
             "mail": "gail@partner.example"},
            {"id": FED, "userPrincipalName": "bob@fed.contoso.example", "displayName": "Bob Federated",
             "accountEnabled": true, "userType": "Member", "onPremisesImmutableId": FED_IMMUTABLE}
        ]
    })
}

/// The shared tenant over HTTPS.
pub async fn start() -> Emu {
    Emu::start(Config::from_fixture(&fixture()).expect("fixture").https()).await
}

/// A create body with every required property and a strong password.
pub fn new_user(local: &str, domain: &str) -> Value {
    json!({
        "accountEnabled": true,
        "displayName": format!("New {local}"),
        "mailNickname": local,
        "userPrincipalName": format!("{local}@{domain}"),
        "passwordProfile": {"forceChangePasswordNextSignIn": true, "password": STRONG}
    })
}
