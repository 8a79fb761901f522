//! The Immutable ID (docs/behaviour.md §2.3): the key that links a source user to its destination user.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::directory::User;

/// A source user whose Immutable ID cannot be derived. This is a read error: the run stops
/// rather than guess a key, because a wrong key would re-create or orphan the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "user with object id {object_id:?} has no onPremisesImmutableId and its object id is not a GUID"
)]
pub struct ImmutableIdError {
    pub object_id: String,
}

/// The user's Immutable ID: `onPremisesImmutableId` when set (the value Entra Connect wrote
/// for a synced on-premises account), otherwise base64 of the object id GUID in .NET byte
/// order — the encoding Entra Connect uses for objectGUID, so a later move to Entra Connect
/// keeps the same key.
pub fn immutable_id(user: &User) -> Result<String, ImmutableIdError> {
    if let Some(id) = user.immutable_id.as_deref().filter(|id| !id.is_empty()) {
        return Ok(id.to_owned());
    }
    immutable_id_from_guid(&user.id)
}

/// Base64 of `object_id` (a GUID in any common text form) in .NET `Guid.ToByteArray()` order:
/// the first three groups little-endian, the last eight bytes as written.
pub fn immutable_id_from_guid(object_id: &str) -> Result<String, ImmutableIdError> {
    let guid = uuid::Uuid::try_parse(object_id).map_err(|_| ImmutableIdError {
        object_id: object_id.to_owned(),
    })?;
    Ok(STANDARD.encode(guid.to_bytes_le()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, on_prem: Option<&str>) -> User {
        User {
            id: id.into(),
            immutable_id: on_prem.map(Into::into),
            ..User::default()
        }
    }

    #[test]
    fn object_id_is_encoded_in_dotnet_byte_order() {
        assert_eq!(
            immutable_id(&user("46e23144-8377-483e-a87e-b6769db62eed", None)).as_deref(),
            Ok("RDHiRneDPkiofrZ2nbYu7Q==")
        );
        // Case and braces do not change the GUID.
        assert_eq!(
            immutable_id_from_guid("{46E23144-8377-483E-A87E-B6769DB62EED}").as_deref(),
            Ok("RDHiRneDPkiofrZ2nbYu7Q==")
        );
    }

    #[test]
    fn on_premises_immutable_id_wins_when_set() {
        let u = user(
            "46e23144-8377-483e-a87e-b6769db62eed",
            Some("+abc/onprem=="),
        );
        assert_eq!(immutable_id(&u).as_deref(), Ok("+abc/onprem=="));
        // An empty value is "not set".
        let u = user("46e23144-8377-483e-a87e-b6769db62eed", Some(""));
        assert_eq!(immutable_id(&u).as_deref(), Ok("RDHiRneDPkiofrZ2nbYu7Q=="));
    }

    #[test]
    fn non_guid_object_id_is_an_error_not_a_panic() {
        let err = immutable_id(&user("not-a-guid", None)).expect_err("must fail");
        assert_eq!(err.object_id, "not-a-guid");
        assert!(immutable_id(&user("", None)).is_err());
    }
}
