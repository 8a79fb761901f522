//! The one small seam between the pure sync core and the systems it talks to.
//!
//! Microsoft Graph and SCIM both implement [`Directory`]; either can be the source or the
//! destination of a run (docs/behaviour.md §6), so the plan, the guard and the preview never know which
//! system is on which side. Nothing here does I/O.

use async_trait::async_trait;

/// A user in the common model: what a directory says about one account, in that directory's
/// own terms (no mapping applied). Field meanings per side:
///
/// | field              | Graph (Entra ID)                         | SCIM                                   |
/// |--------------------|------------------------------------------|----------------------------------------|
/// | `id`               | object id (GUID)                         | server-assigned `id`                   |
/// | `user_name`        | `userPrincipalName`                      | `userName`                             |
/// | `upn`              | `userPrincipalName`                      | the `userPrincipalNameAttribute`, if set |
/// | `display_name`     | `displayName`                            | `displayName`                          |
/// | `given_name`       | `givenName`                              | `name.givenName`                       |
/// | `surname`          | `surname`                                | `name.familyName`                      |
/// | `email`            | `mail`                                   | primary (else first) `emails[].value`  |
/// | `proxy_addresses`  | `proxyAddresses`                         | empty                                  |
/// | `active`           | `accountEnabled`                         | `active`                               |
/// | `immutable_id`     | `onPremisesImmutableId`                  | `externalId`                           |
/// | `guest`            | `userType == "Guest"`                    | false                                  |
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub user_name: String,
    pub upn: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub email: Option<String>,
    pub proxy_addresses: Vec<String>,
    pub active: bool,
    pub immutable_id: Option<String>,
    pub guest: bool,
}

/// Which users a listing should return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListScope {
    /// Every user of the directory (a destination is read whole, so that userName collisions
    /// and stray accounts are visible whatever the UPN mode).
    All,
    /// Users whose user name ends in `@<domain>`, case-insensitively (a Graph source uses the
    /// advanced-query `endswith` filter).
    Domain(String),
}

/// The values a destination user should have after a write: the sync items after mapping.
/// `None` means "absent" (the attribute is removed or left unset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredUser {
    pub user_name: String,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub email: Option<String>,
    pub active: bool,
    /// Written as the destination's `externalId`.
    pub immutable_id: String,
    /// Written to the destination's `userPrincipalNameAttribute` when that is configured.
    pub upn: Option<String>,
}

/// Why a directory call failed, in the classes the run and the operator act on.
/// Messages are already cut to a status and an error code (docs/behaviour.md §4): never a server's
/// whole body, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The credentials were refused (token endpoint 400/401, or 401/403 from the API).
    #[error("credentials refused: {0}")]
    InvalidCredentials(String),
    /// The system could not be reached or kept failing after the bounded retries
    /// (connect errors, timeouts, 429/5xx exhausted). Worth retrying the run later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The endpoint is refused by the outbound policy (docs/behaviour.md §8).
    #[error("endpoint not allowed: {0}")]
    EndpointNotAllowed(String),
    /// A create collided with an existing user (SCIM 409): the run re-plans this user.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The target user is gone.
    #[error("not found: {0}")]
    NotFound(String),
    /// The target's `externalId` no longer equals the recorded Immutable ID, so the write was
    /// not sent (docs/behaviour.md §2.4).
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// The server answered something that breaks the protocol or a safety bound: a body over
    /// the cap, a repeated skiptoken, a nextLink to another host, a redirect, a record missing
    /// a selected field, totals that do not add up. The run is aborted.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Any other refusal of a single request (e.g. SCIM 400 invalidValue).
    #[error("rejected: {0}")]
    Rejected(String),
    /// This one user may not be written: the directory refused the write for this user only
    /// (Graph 403 `Authorization_RequestDenied` on a write by an app that holds the write
    /// permission: a user in an administrator role), or the client refuses to write it (a user
    /// synced from on-premises AD, a guest). A per-row failure, not refused credentials: the
    /// run goes on with the other users (docs/behaviour.md §6, "privileged user").
    #[error("not allowed to write this user: {0}")]
    Forbidden(String),
}

/// Where a listing puts the users it reads, one at a time (see [`Directory::list_users_into`]).
pub trait UserSink: Send {
    /// The listing announced about `n` users in all (e.g. Graph's `@odata.count`), so room can
    /// be made once. Only a hint: more or fewer may come.
    fn size_hint(&mut self, _n: usize) {}

    fn push(&mut self, user: User);
}

impl UserSink for Vec<User> {
    fn size_hint(&mut self, n: usize) {
        self.reserve_exact(n.saturating_sub(self.len()));
    }

    fn push(&mut self, user: User) {
        Vec::push(self, user);
    }
}

/// One entry of a delta read (docs/behaviour.md §7): a user as it is now, or a user removed from
/// the directory (soft-deleted or gone for good; both mean "no longer a source user").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeltaItem {
    Changed(User),
    Removed { id: String },
}

/// What following a delta link gave: every change since the link was issued, in the order read
/// (a feed may send a user twice and replays changes; the planner keeps the last version of
/// each), and the link that continues from here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeltaRead {
    pub items: Vec<DeltaItem>,
    pub link: String,
}

/// Why a delta link could not be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The directory no longer accepts the link (expired, reset, any 4xx): a full run is due,
    /// and nothing is wrong with the directory.
    #[error("delta link refused: {0}")]
    Rejected(String),
    /// The read failed as any read can; the run fails with it.
    #[error(transparent)]
    Read(#[from] DirectoryError),
}

/// A source that can say what changed since a point in time (Graph's `/users/delta`).
#[async_trait]
pub trait DeltaSource: Send + Sync {
    /// A link that will return every change made from now on (`$deltatoken=latest`); taken
    /// before a full read, so that nothing changed during the read is missed.
    async fn delta_link_now(&self) -> Result<String, DirectoryError>;

    /// Follows `link` to its end.
    async fn read_delta(&self, link: &str) -> Result<DeltaRead, DeltaError>;
}

/// One update of [`Directory::update_users`]: the arguments of [`Directory::update_user`].
#[derive(Clone, Copy, Debug)]
pub struct UserUpdate<'a> {
    pub id: &'a str,
    pub current: &'a User,
    pub desired: &'a DesiredUser,
    pub expected_immutable_id: Option<&'a str>,
}

/// A directory of users that a run can read from and write to.
///
/// Writes take the Immutable ID the caller expects the target to carry right now
/// (`expected_immutable_id`; `None` = it must carry none, as when adopting), so an update or
/// delete is sent only while the target still belongs to us (docs/behaviour.md §2.4). A mismatch is
/// [`DirectoryError::PreconditionFailed`] and nothing is written.
#[async_trait]
pub trait Directory: Send + Sync {
    /// Reads every user in `scope`. A listing that fails part-way is an error, never a
    /// shorter list.
    async fn list_users(&self, scope: &ListScope) -> Result<Vec<User>, DirectoryError>;

    /// Reads every user in `scope` like [`Directory::list_users`], handing each to `sink` as it
    /// is read, so that a caller keeping only part of each user (the source's mapping) never
    /// holds the whole listing in the common model. On an error what `sink` got is incomplete
    /// and must be discarded. The default reads the whole listing first.
    async fn list_users_into(
        &self,
        scope: &ListScope,
        sink: &mut dyn UserSink,
    ) -> Result<(), DirectoryError> {
        let users = self.list_users(scope).await?;
        sink.size_hint(users.len());
        for user in users {
            sink.push(user);
        }
        Ok(())
    }

    /// Reads one user by its `id`; `Ok(None)` when it does not exist. Used to tell a user who
    /// left this resource's domain for another synced domain (handed over, never deleted)
    /// from one who left the tenant.
    async fn get_user(&self, id: &str) -> Result<Option<User>, DirectoryError>;

    /// The directory's change feed, when it has one (incremental runs, docs/behaviour.md §7).
    fn delta(&self) -> Option<&dyn DeltaSource> {
        None
    }

    /// Finds users by exact user name (case-insensitive), e.g. to re-plan after a 409 on create.
    async fn find_by_user_name(&self, user_name: &str) -> Result<Vec<User>, DirectoryError>;

    /// Creates a user and returns it as the directory stored it (with its new `id`).
    async fn create_user(&self, user: &DesiredUser) -> Result<User, DirectoryError>;

    /// Brings user `id` to `desired`. `current` is the user as listed at plan time.
    async fn update_user(
        &self,
        id: &str,
        current: &User,
        desired: &DesiredUser,
        expected_immutable_id: Option<&str>,
    ) -> Result<(), DirectoryError>;

    /// Deletes user `id`.
    async fn delete_user(
        &self,
        id: &str,
        expected_immutable_id: Option<&str>,
    ) -> Result<(), DirectoryError>;

    /// The most updates or deletes [`Directory::update_users`] and [`Directory::delete_users`]
    /// send in one request (Graph's `$batch`). 1, the default: one request per write, and the
    /// engine calls [`Directory::update_user`] and [`Directory::delete_user`] one at a time.
    fn batch_limit(&self) -> usize {
        1
    }

    /// [`Directory::update_user`] for several users at once: one result per update, in order.
    /// The default makes them one after the other.
    async fn update_users(&self, updates: &[UserUpdate<'_>]) -> Vec<Result<(), DirectoryError>> {
        update_one_by_one(self, updates).await
    }

    /// [`Directory::delete_user`] for several users at once, each `(id, expected Immutable
    /// ID)`: one result per user, in order. The default deletes them one after the other.
    async fn delete_users(
        &self,
        deletes: &[(&str, Option<&str>)],
    ) -> Vec<Result<(), DirectoryError>> {
        delete_one_by_one(self, deletes).await
    }

    /// Users deleted but still restorable (Entra ID's `directory/deletedItems`), with the
    /// user name they had. A directory without such a bin has none.
    async fn deleted_users(&self) -> Result<Vec<User>, DirectoryError> {
        Ok(Vec::new())
    }

    /// Brings deleted user `id` back as the same object and returns it as it now reads.
    async fn restore_user(&self, id: &str) -> Result<User, DirectoryError> {
        Err(DirectoryError::NotFound(format!(
            "deleted user {id}: this directory keeps no deleted users"
        )))
    }
}

/// [`Directory::update_users`] as single updates, one after the other (its default).
pub async fn update_one_by_one<D: Directory + ?Sized>(
    dir: &D,
    updates: &[UserUpdate<'_>],
) -> Vec<Result<(), DirectoryError>> {
    let mut results = Vec::with_capacity(updates.len());
    for u in updates {
        results.push(
            dir.update_user(u.id, u.current, u.desired, u.expected_immutable_id)
                .await,
        );
    }
    results
}

/// [`Directory::delete_users`] as single deletes, one after the other (its default).
pub async fn delete_one_by_one<D: Directory + ?Sized>(
    dir: &D,
    deletes: &[(&str, Option<&str>)],
) -> Vec<Result<(), DirectoryError>> {
    let mut results = Vec::with_capacity(deletes.len());
    for (id, expected) in deletes {
        results.push(dir.delete_user(id, *expected).await);
    }
    results
}

/// Ceilings on one listing of a directory, so that a server that never stops paging (or claims
/// a total no real directory has) ends the read with an error instead of exhausting memory.
/// Far above any directory this tool is built for (100,000 users); settable per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListingLimits {
    /// Users one listing may hold.
    pub max_users: u64,
    /// Response bytes one listing may read.
    pub max_bytes: u64,
}

impl ListingLimits {
    pub const DEFAULT_MAX_USERS: u64 = 1_000_000;
    pub const DEFAULT_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;

    /// A listing that claims `total` users (`@odata.count`, `totalResults`): more than the
    /// ceiling is refused at once, before its pages are read.
    pub fn check_claimed(&self, what: &str, total: u64) -> Result<(), DirectoryError> {
        if total > self.max_users {
            return Err(DirectoryError::Protocol(format!(
                "{what}: the server reports {total} users, more than the ceiling of {} (raise it \
                 with --max-listing-users if the directory is really this large)",
                self.max_users
            )));
        }
        Ok(())
    }

    /// A listing that has read `users` users in `bytes` response bytes so far.
    pub fn check_read(&self, what: &str, users: u64, bytes: u64) -> Result<(), DirectoryError> {
        if users > self.max_users {
            return Err(DirectoryError::Protocol(format!(
                "{what}: the listing passed {} users before it ended (the ceiling; raise it with \
                 --max-listing-users if the directory is really this large)",
                self.max_users
            )));
        }
        if bytes > self.max_bytes {
            return Err(DirectoryError::Protocol(format!(
                "{what}: the listing passed {} MiB before it ended (the ceiling; raise it with \
                 --max-listing-bytes if the directory is really this large)",
                self.max_bytes / (1024 * 1024)
            )));
        }
        Ok(())
    }
}

impl Default for ListingLimits {
    fn default() -> Self {
        Self {
            max_users: Self::DEFAULT_MAX_USERS,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// What Entra ID accepts in a user it is asked to write: shared by the mapping of the other
/// direction (`crate::sync::reverse`), which plans a Conflict row for what Graph would refuse,
/// and by the Graph client, which checks again before it sends anything.
pub mod entra {
    /// Why Graph would refuse `upn` as a userPrincipalName, or `Ok`: one `@`, a local part of only
    /// `A–Z a–z 0–9 ' . - _ ! # ^ ~` that neither starts nor ends with `.` and has at most 64
    /// characters, a domain, 113 characters in all (the create rules gathered in
    /// docs/behaviour.md §6). Whether the domain is a verified domain of the tenant only Graph
    /// knows.
    pub fn check_upn(upn: &str) -> Result<(), &'static str> {
        let Some((local, domain)) = upn.split_once('@') else {
            return Err("it has no @domain");
        };
        if domain.is_empty() || domain.contains('@') {
            return Err("it needs exactly one @ followed by a domain");
        }
        if local.is_empty() {
            return Err("its local part is empty");
        }
        if !local.bytes().all(is_upn_local_byte) {
            return Err(
                "its local part may hold only letters A-Z, digits and ' . - _ ! # ^ ~ (no spaces, no other characters)",
            );
        }
        if local.starts_with('.') || local.ends_with('.') {
            return Err("its local part may not start or end with a dot");
        }
        if local.len() > 64 {
            return Err("its local part is longer than 64 characters");
        }
        if upn.len() > 113 {
            return Err("it is longer than 113 characters");
        }
        if !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err("its domain is not a domain name");
        }
        Ok(())
    }

    fn is_upn_local_byte(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"'.-_!#^~".contains(&b)
    }

    /// Why Graph would refuse `id` as `onPremisesImmutableId`, or `Ok`: it must be set and may not
    /// hold `_` or `$` (so base64url, which can, is refused: use standard base64).
    pub fn check_immutable_id(id: &str) -> Result<(), &'static str> {
        if id.trim().is_empty() {
            return Err("the Immutable ID is empty");
        }
        if id.contains('_') || id.contains('$') {
            return Err(
                "the Immutable ID contains '_' or '$', which Graph refuses (use standard base64, not base64url)",
            );
        }
        if !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the Immutable ID contains spaces or non-ASCII characters");
        }
        Ok(())
    }
}
