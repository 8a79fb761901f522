//! The Graph v1.0 `user` property table: which properties exist, how the emulator stores
//! them, which are in the default set, and which only single-user GET can return.

/// Where a property lives inside [`crate::user::User`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The object id.
    Id,
    /// A nullable string in `User::strs[i]`.
    Str(usize),
    /// `accountEnabled`.
    Enabled,
    /// A string collection in `User::lists[i]`.
    List(usize),
    /// Anything else: kept as raw JSON in `User::extra` (null, or `[]` for collections, when unset).
    Extra { collection: bool },
}

#[derive(Debug)]
pub struct PropDef {
    pub name: &'static str,
    pub slot: Slot,
    /// Returned only by `GET /users/{id}`; selecting it on the collection gives 501.
    pub single_only: bool,
}

// Indexes into `User::strs`.
pub const UPN: usize = 0;
pub const DISPLAY_NAME: usize = 1;
pub const GIVEN_NAME: usize = 2;
pub const SURNAME: usize = 3;
pub const MAIL: usize = 4;
pub const JOB_TITLE: usize = 5;
pub const MOBILE_PHONE: usize = 6;
pub const OFFICE_LOCATION: usize = 7;
pub const PREFERRED_LANGUAGE: usize = 8;
pub const DEPARTMENT: usize = 9;
pub const EMPLOYEE_ID: usize = 10;
pub const IMMUTABLE_ID: usize = 11;
pub const USER_TYPE: usize = 12;
pub const USAGE_LOCATION: usize = 13;
pub const MAIL_NICKNAME: usize = 14;
pub const CREATED: usize = 15;
pub const COMPANY_NAME: usize = 16;
pub const N_STRS: usize = 17;

// Indexes into `User::lists`.
pub const BUSINESS_PHONES: usize = 0;
pub const PROXY_ADDRESSES: usize = 1;
pub const OTHER_MAILS: usize = 2;
pub const N_LISTS: usize = 3;

const fn p(name: &'static str, slot: Slot) -> PropDef {
    PropDef {
        name,
        slot,
        single_only: false,
    }
}
const fn single(name: &'static str, collection: bool) -> PropDef {
    PropDef {
        name,
        slot: Slot::Extra { collection },
        single_only: true,
    }
}
const fn x(name: &'static str) -> PropDef {
    p(name, Slot::Extra { collection: false })
}
const fn xl(name: &'static str) -> PropDef {
    p(name, Slot::Extra { collection: true })
}

/// Every property of the v1.0 `user` resource (navigation properties excluded).
pub static PROPS: &[PropDef] = &[
    p("id", Slot::Id),
    p("userPrincipalName", Slot::Str(UPN)),
    p("displayName", Slot::Str(DISPLAY_NAME)),
    p("givenName", Slot::Str(GIVEN_NAME)),
    p("surname", Slot::Str(SURNAME)),
    p("mail", Slot::Str(MAIL)),
    p("jobTitle", Slot::Str(JOB_TITLE)),
    p("mobilePhone", Slot::Str(MOBILE_PHONE)),
    p("officeLocation", Slot::Str(OFFICE_LOCATION)),
    p("preferredLanguage", Slot::Str(PREFERRED_LANGUAGE)),
    p("department", Slot::Str(DEPARTMENT)),
    p("employeeId", Slot::Str(EMPLOYEE_ID)),
    p("onPremisesImmutableId", Slot::Str(IMMUTABLE_ID)),
    p("userType", Slot::Str(USER_TYPE)),
    p("usageLocation", Slot::Str(USAGE_LOCATION)),
    p("mailNickname", Slot::Str(MAIL_NICKNAME)),
    p("createdDateTime", Slot::Str(CREATED)),
    p("companyName", Slot::Str(COMPANY_NAME)),
    p("accountEnabled", Slot::Enabled),
    p("businessPhones", Slot::List(BUSINESS_PHONES)),
    p("proxyAddresses", Slot::List(PROXY_ADDRESSES)),
    p("otherMails", Slot::List(OTHER_MAILS)),
    x("ageGroup"),
    xl("assignedLicenses"),
    xl("assignedPlans"),
    x("authorizationInfo"),
    x("city"),
    x("consentProvidedForMinor"),
    x("country"),
    x("creationType"),
    x("customSecurityAttributes"),
    x("deletedDateTime"),
    x("employeeHireDate"),
    x("employeeLeaveDateTime"),
    x("employeeOrgData"),
    x("employeeType"),
    x("externalUserState"),
    x("externalUserStateChangeDateTime"),
    x("faxNumber"),
    xl("identities"),
    xl("imAddresses"),
    x("isManagementRestricted"),
    x("isResourceAccount"),
    x("lastPasswordChangeDateTime"),
    x("legalAgeGroupClassification"),
    xl("licenseAssignmentStates"),
    x("onPremisesDistinguishedName"),
    x("onPremisesDomainName"),
    x("onPremisesExtensionAttributes"),
    x("onPremisesLastSyncDateTime"),
    xl("onPremisesProvisioningErrors"),
    x("onPremisesSamAccountName"),
    x("onPremisesSecurityIdentifier"),
    x("onPremisesSyncEnabled"),
    x("onPremisesUserPrincipalName"),
    x("passwordPolicies"),
    x("passwordProfile"),
    x("postalCode"),
    x("preferredDataLocation"),
    xl("provisionedPlans"),
    x("securityIdentifier"),
    xl("serviceProvisioningErrors"),
    x("showInAddressList"),
    x("signInActivity"),
    x("signInSessionsValidFromDateTime"),
    x("state"),
    x("streetAddress"),
    single("aboutMe", false),
    single("birthday", false),
    single("hireDate", false),
    single("interests", true),
    single("mailboxSettings", false),
    single("mySite", false),
    single("pastProjects", true),
    single("preferredName", false),
    single("responsibilities", true),
    single("schools", true),
    single("skills", true),
];

/// The properties `GET /users` returns without `$select`, in Graph's order.
pub static DEFAULT_SET: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// Index into [`PROPS`] of a property name (case-insensitive, as Graph is).
pub fn lookup(name: &str) -> Option<usize> {
    PROPS.iter().position(|d| d.name.eq_ignore_ascii_case(name))
}

/// Index into [`PROPS`] of a name known to exist.
pub fn idx(name: &str) -> usize {
    lookup(name).unwrap_or(0)
}

pub fn default_set() -> Vec<usize> {
    DEFAULT_SET.iter().map(|n| idx(n)).collect()
}
