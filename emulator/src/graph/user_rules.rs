//! The value rules Graph applies to user writes (shared/reference/graph-writes.md §1 "Input
//! rules", §2), and the property lists they need. Pure functions: `user_writes.rs` turns a
//! broken rule into Graph's error body.

use crate::props::{PROPS, Slot};

/// The properties `POST /users` requires (besides `passwordProfile`, which federated users
/// may leave out: `user_writes.rs`), in the order Graph's docs list them.
pub const REQUIRED: &[&str] = &[
    "accountEnabled",
    "displayName",
    "mailNickname",
    "userPrincipalName",
];

/// Properties Graph computes or that other APIs own: a write naming one is refused with
/// "Property 'x' is read-only and cannot be set.". `onPremisesSyncEnabled` and the other
/// `onPremises*` sync properties are Entra Connect's; `proxyAddresses` follows `mail`;
/// licences have their own API. (The control API can still set them all.)
pub const READ_ONLY: &[&str] = &[
    "id",
    "createdDateTime",
    "creationType",
    "deletedDateTime",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "proxyAddresses",
    "assignedLicenses",
    "assignedPlans",
    "provisionedPlans",
    "licenseAssignmentStates",
    "isManagementRestricted",
    "isResourceAccount",
    "lastPasswordChangeDateTime",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "securityIdentifier",
    "serviceProvisioningErrors",
    "signInActivity",
    "signInSessionsValidFromDateTime",
];

/// What the cloud may still change on a user synced from on-premises AD (its source of
/// authority is AD for everything else: "Unable to update the specified properties for
/// objects that have originated within an external service.").
pub const CLOUD_WRITABLE_WHEN_SYNCED: &[&str] = &[
    "usageLocation",
    "ageGroup",
    "consentProvidedForMinor",
    "preferredDataLocation",
];

/// Properties a single user GET returns but which live in SharePoint, not the directory;
/// writes to them are not emulated.
pub fn is_single_only(name: &str) -> bool {
    crate::props::lookup(name).is_some_and(|p| PROPS[p].single_only)
}

/// Is the property stored as a string (for the type check of a write)?
pub fn is_string(prop: usize) -> bool {
    matches!(PROPS[prop].slot, Slot::Str(_))
}

/// UPN: `local@domain`, the local part only `A–Z a–z 0–9 ' . - _ ! # ^ ~` (Graph's create-user
/// docs), not starting or ending with a period; at most 64 characters before the `@`, 48
/// after, 113 in all (Entra's username policy).
pub fn upn_is_valid(upn: &str) -> bool {
    let Some((local, domain)) = upn.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !domain.is_empty()
        && domain.len() <= 48
        && upn.len() <= 113
        && !domain.contains('@')
        && !local.starts_with('.')
        && !local.ends_with('.')
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "'.-_!#^~".contains(c))
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// `mailNickname`: 1–64 ASCII characters, none of the address separators Exchange refuses
/// (`@ , ; : < > ( ) [ ] \ "` and white space), not starting or ending with a period
/// (reference §8.1: "≤64, no `,` `@` spaces"; graph-docs-contrib#6580 is a comma).
pub fn mail_nickname_is_valid(nick: &str) -> bool {
    !nick.is_empty()
        && nick.len() <= 64
        && !nick.starts_with('.')
        && !nick.ends_with('.')
        && nick
            .chars()
            .all(|c| c.is_ascii_graphic() && !"@,;:<>()[]\\\"".contains(c))
}

/// `onPremisesImmutableId`: `$` and `_` are not allowed (Graph's user resource docs).
pub fn immutable_id_is_valid(id: &str) -> bool {
    !id.is_empty() && !id.contains('$') && !id.contains('_')
}

/// Common passwords (a small stand-in for Entra's global banned password list).
const BANNED: &[&str] = &[
    "password",
    "welcome",
    "qwerty",
    "letmein",
    "admin",
    "iloveyou",
    "monkey",
    "dragon",
    "abcdef",
    "summer",
    "winter",
    "spring",
    "autumn",
    "football",
    "baseball",
    "microsoft",
];

/// Entra's cloud password policy (reference §1, concept-sspr-policy): 8–256 characters, only
/// printable ASCII and spaces (no Unicode), at least three of lower case, upper case, digits
/// and symbols; and Entra Password Protection's scoring against banned words: after lower
/// casing and undoing the usual substitutions (`@`→a, `0`→o, `1`→l, `$`→s, ...), each banned
/// word found scores 1 point and every other character 1 point; fewer than 5 points is weak
/// (`P@ssw0rd1!` scores 3, `Password123` 4).
pub fn password_is_strong(pw: &str) -> bool {
    let n = pw.chars().count();
    if !(8..=256).contains(&n) || !pw.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return false;
    }
    let classes = [
        pw.chars().any(|c| c.is_ascii_lowercase()),
        pw.chars().any(|c| c.is_ascii_uppercase()),
        pw.chars().any(|c| c.is_ascii_digit()),
        pw.chars().any(|c| !c.is_ascii_alphanumeric()),
    ];
    if classes.iter().filter(|x| **x).count() < 3 {
        return false;
    }
    let mut rest: String = pw
        .to_ascii_lowercase()
        .chars()
        .map(|c| match c {
            '@' | '4' => 'a',
            '0' => 'o',
            '1' | '!' | '|' => 'l',
            '3' => 'e',
            '$' | '5' => 's',
            '7' => 't',
            c => c,
        })
        .collect();
    let mut points = 0;
    for b in BANNED {
        while let Some(i) = rest.find(b) {
            rest.replace_range(i..i + b.len(), "");
            points += 1;
        }
    }
    points + rest.chars().count() >= 5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upns() {
        assert!(upn_is_valid("liam.o'brien@example.com"));
        assert!(upn_is_valid("a_b-c!d#e^f~g@sub.example.com"));
        for bad in [
            "no-at-sign",
            "@example.com",
            "a@",
            "a+b@example.com",
            "ä@example.com",
            ".a@example.com",
            "a.@example.com",
            "a b@example.com",
            "a@b@example.com",
        ] {
            assert!(!upn_is_valid(bad), "{bad}");
        }
        assert!(!upn_is_valid(&format!("{}@example.com", "a".repeat(65))));
    }

    #[test]
    fn nicknames() {
        assert!(mail_nickname_is_valid("taro.yamada"));
        assert!(mail_nickname_is_valid("o'brien"));
        for bad in ["", "naveen.mills,.jr.", "a b", "a@b", ".a", "山田", "a;b"] {
            assert!(!mail_nickname_is_valid(bad), "{bad}");
        }
        assert!(!mail_nickname_is_valid(&"a".repeat(65)));
    }

    #[test]
    fn passwords() {
        assert!(password_is_strong("xWwvJ]6NMw+bWH-d"));
        assert!(password_is_strong("correct Horse 7"));
        assert!(password_is_strong("Summer-2024-ok!"));
        for weak in [
            "Short1!",
            "alllowercase1",
            "ALLUPPER!!!!",
            "P@ssw0rd1!",
            "Password123",
            "Welcome1!",
            "Pässwort123!",
        ] {
            assert!(!password_is_strong(weak), "{weak}");
        }
        assert!(!password_is_strong(&format!("Aa1!{}", "x".repeat(253))));
    }

    #[test]
    fn immutable_ids() {
        assert!(immutable_id_is_valid("RDHiRneDPkiofrZ2nbYu7Q=="));
        assert!(!immutable_id_is_valid("abc_def"));
        assert!(!immutable_id_is_valid("abc$"));
    }
}
