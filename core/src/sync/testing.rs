//! An in-memory [`Directory`] for tests (unit and integration), with switches for the
//! failures a run must survive. Behaves like a strict SCIM server: unique userNames
//! (case-insensitive), 409 on a duplicate create, and the externalId precondition on writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::directory::{
    DeltaError, DeltaItem, DeltaRead, DeltaSource, DesiredUser, Directory, DirectoryError,
    ListScope, User, UserUpdate, delete_one_by_one, update_one_by_one,
};
use crate::sync::config::ends_with_ignore_ascii_case;
use crate::sync::plan::same_user_name;

/// How many times each call was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    pub lists: usize,
    pub gets: usize,
    pub finds: usize,
    pub creates: usize,
    pub updates: usize,
    pub deletes: usize,
    /// Delta reads (links followed) and links taken.
    pub deltas: usize,
    /// Calls of `update_users` / `delete_users` (each also counts its users in `updates` /
    /// `deletes`).
    pub batches: usize,
}

impl Calls {
    /// Write calls made (successful or not).
    pub fn writes(&self) -> usize {
        self.creates + self.updates + self.deletes
    }
}

#[derive(Default)]
struct State {
    users: BTreeMap<String, User>,
    next_id: u64,
    calls: Calls,
    list_error: Option<DirectoryError>,
    list_override: Option<Vec<User>>,
    get_error: Option<DirectoryError>,
    /// Writes to these userNames (lower-case) fail with the error.
    write_errors: HashMap<String, DirectoryError>,
    /// Creating this userName (lower-case) first inserts the user (someone else raced us).
    create_races: HashMap<String, User>,
    /// Every change, as (sequence number, user id): the change feed of [`DeltaSource`].
    log: Vec<(u64, String)>,
    seq: u64,
    /// Delta links below this sequence number are refused.
    delta_floor: u64,
    /// Deletes are soft, as in Entra ID: deleted users wait here, by id.
    recycle_bin: Option<BTreeMap<String, User>>,
    restores: usize,
    /// [`Directory::batch_limit`]; 0 = the default.
    batch_limit: usize,
}

impl State {
    fn changed(&mut self, id: &str) {
        self.seq += 1;
        let seq = self.seq;
        self.log.push((seq, id.to_owned()));
    }
}

/// An in-memory directory.
#[derive(Default)]
pub struct FakeDirectory {
    state: Mutex<State>,
}

impl FakeDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory holding `users` (their `id`s must be unique).
    pub fn with_users(users: impl IntoIterator<Item = User>) -> Self {
        let dir = Self::new();
        {
            let mut s = dir.lock();
            for u in users {
                s.users.insert(u.id.clone(), u);
            }
        }
        dir
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Deletes become soft deletes, restorable as the same object (Entra ID's deleted items).
    pub fn with_recycle_bin(self) -> Self {
        self.lock().recycle_bin = Some(BTreeMap::new());
        self
    }

    /// Takes up to `n` updates or deletes per call, as Graph's `$batch` does.
    pub fn with_batch_limit(self, n: usize) -> Self {
        self.lock().batch_limit = n;
        self
    }

    /// Users in the recycle bin.
    pub fn deleted(&self) -> Vec<User> {
        self.lock()
            .recycle_bin
            .as_ref()
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Restores made.
    pub fn restores(&self) -> usize {
        self.lock().restores
    }

    /// Every user, by id.
    pub fn users(&self) -> Vec<User> {
        self.lock().users.values().cloned().collect()
    }

    /// The user with this userName (case-insensitive).
    pub fn user_named(&self, user_name: &str) -> Option<User> {
        self.lock()
            .users
            .values()
            .find(|u| same_user_name(&u.user_name, user_name))
            .cloned()
    }

    pub fn insert(&self, user: User) {
        let mut s = self.lock();
        s.changed(&user.id);
        s.users.insert(user.id.clone(), user);
    }

    pub fn remove(&self, id: &str) -> Option<User> {
        let mut s = self.lock();
        s.changed(id);
        s.users.remove(id)
    }

    /// Every delta link taken so far is refused from now on (an expired token).
    pub fn expire_delta_links(&self) {
        let mut s = self.lock();
        s.delta_floor = s.seq + 1;
        s.seq += 1;
    }

    pub fn calls(&self) -> Calls {
        self.lock().calls
    }

    /// Every listing fails with `err` (a partial or refused read).
    pub fn fail_list(&self, err: DirectoryError) {
        self.lock().list_error = Some(err);
    }

    /// Listings return exactly `users` from now on (a read that looks fine but is wrong);
    /// look-ups and writes still see the real contents.
    pub fn list_returns(&self, users: Vec<User>) {
        self.lock().list_override = Some(users);
    }

    /// Every `get_user` fails with `err`.
    pub fn fail_get(&self, err: DirectoryError) {
        self.lock().get_error = Some(err);
    }

    /// Writes concerning `user_name` fail with `err`.
    pub fn fail_writes_for(&self, user_name: &str, err: DirectoryError) {
        self.lock()
            .write_errors
            .insert(user_name.to_lowercase(), err);
    }

    /// When `user_name` is created, `existing` appears first, as if another writer raced us;
    /// the create then gets a 409.
    pub fn race_on_create(&self, user_name: &str, existing: User) {
        self.lock()
            .create_races
            .insert(user_name.to_lowercase(), existing);
    }
}

fn externals_match(current: Option<&str>, expected: Option<&str>) -> bool {
    current.filter(|e| !e.is_empty()) == expected.filter(|e| !e.is_empty())
}

#[async_trait]
impl Directory for FakeDirectory {
    async fn list_users(&self, scope: &ListScope) -> Result<Vec<User>, DirectoryError> {
        let mut s = self.lock();
        s.calls.lists += 1;
        if let Some(e) = &s.list_error {
            return Err(e.clone());
        }
        if let Some(users) = &s.list_override {
            return Ok(users.clone());
        }
        Ok(match scope {
            ListScope::All => s.users.values().cloned().collect(),
            ListScope::Domain(d) => {
                let suffix = format!("@{}", d.to_ascii_lowercase());
                s.users
                    .values()
                    .filter(|u| ends_with_ignore_ascii_case(&u.user_name, &suffix))
                    .cloned()
                    .collect()
            }
        })
    }

    async fn get_user(&self, id: &str) -> Result<Option<User>, DirectoryError> {
        let mut s = self.lock();
        s.calls.gets += 1;
        if let Some(e) = &s.get_error {
            return Err(e.clone());
        }
        Ok(s.users.get(id).cloned())
    }

    async fn find_by_user_name(&self, user_name: &str) -> Result<Vec<User>, DirectoryError> {
        let mut s = self.lock();
        s.calls.finds += 1;
        Ok(s.users
            .values()
            .filter(|u| same_user_name(&u.user_name, user_name))
            .cloned()
            .collect())
    }

    async fn create_user(&self, user: &DesiredUser) -> Result<User, DirectoryError> {
        let mut s = self.lock();
        s.calls.creates += 1;
        let key = user.user_name.to_lowercase();
        if let Some(e) = s.write_errors.get(&key) {
            return Err(e.clone());
        }
        if let Some(existing) = s.create_races.remove(&key) {
            s.users.insert(existing.id.clone(), existing);
        }
        if s.users
            .values()
            .any(|u| same_user_name(&u.user_name, &user.user_name))
        {
            return Err(DirectoryError::Conflict("409 uniqueness".into()));
        }
        s.next_id += 1;
        let id = format!("fake-{}", s.next_id);
        let created = User {
            id: id.clone(),
            user_name: user.user_name.clone(),
            upn: user.upn.clone(),
            display_name: user.display_name.clone(),
            given_name: user.given_name.clone(),
            surname: user.surname.clone(),
            email: user.email.clone(),
            proxy_addresses: Vec::new(),
            active: user.active,
            immutable_id: Some(user.immutable_id.clone()),
            guest: false,
        };
        s.changed(&id);
        s.users.insert(id, created.clone());
        Ok(created)
    }

    async fn update_user(
        &self,
        id: &str,
        _current: &User,
        desired: &DesiredUser,
        expected_immutable_id: Option<&str>,
    ) -> Result<(), DirectoryError> {
        let mut s = self.lock();
        s.calls.updates += 1;
        let current_name = s.users.get(id).map(|u| u.user_name.to_lowercase());
        for key in [Some(desired.user_name.to_lowercase()), current_name]
            .into_iter()
            .flatten()
        {
            if let Some(e) = s.write_errors.get(&key) {
                return Err(e.clone());
            }
        }
        if s.users
            .values()
            .any(|u| u.id != id && same_user_name(&u.user_name, &desired.user_name))
        {
            return Err(DirectoryError::Conflict("409 uniqueness".into()));
        }
        let Some(u) = s.users.get(id) else {
            return Err(DirectoryError::NotFound("404".into()));
        };
        if !externals_match(u.immutable_id.as_deref(), expected_immutable_id) {
            return Err(DirectoryError::PreconditionFailed(
                "externalId changed".into(),
            ));
        }
        // Only a write that happens is a change in the feed.
        s.changed(id);
        let Some(u) = s.users.get_mut(id) else {
            return Err(DirectoryError::NotFound("404".into()));
        };
        u.user_name = desired.user_name.clone();
        u.display_name = desired.display_name.clone();
        u.given_name = desired.given_name.clone();
        u.surname = desired.surname.clone();
        u.email = desired.email.clone();
        u.active = desired.active;
        u.immutable_id = Some(desired.immutable_id.clone());
        if desired.upn.is_some() {
            u.upn = desired.upn.clone();
        }
        Ok(())
    }

    fn batch_limit(&self) -> usize {
        self.lock().batch_limit.max(1)
    }

    async fn update_users(&self, updates: &[UserUpdate<'_>]) -> Vec<Result<(), DirectoryError>> {
        assert!(
            updates.len() <= self.batch_limit(),
            "a batch over the limit"
        );
        self.lock().calls.batches += 1;
        update_one_by_one(self, updates).await
    }

    async fn delete_users(
        &self,
        deletes: &[(&str, Option<&str>)],
    ) -> Vec<Result<(), DirectoryError>> {
        assert!(
            deletes.len() <= self.batch_limit(),
            "a batch over the limit"
        );
        self.lock().calls.batches += 1;
        delete_one_by_one(self, deletes).await
    }

    async fn delete_user(
        &self,
        id: &str,
        expected_immutable_id: Option<&str>,
    ) -> Result<(), DirectoryError> {
        let mut s = self.lock();
        s.calls.deletes += 1;
        if let Some(name) = s.users.get(id).map(|u| u.user_name.to_lowercase())
            && let Some(e) = s.write_errors.get(&name)
        {
            return Err(e.clone());
        }
        let Some(u) = s.users.get(id) else {
            return Err(DirectoryError::NotFound("404".into()));
        };
        if !externals_match(u.immutable_id.as_deref(), expected_immutable_id) {
            return Err(DirectoryError::PreconditionFailed(
                "externalId changed".into(),
            ));
        }
        s.changed(id);
        if let Some(u) = s.users.remove(id)
            && let Some(bin) = s.recycle_bin.as_mut()
        {
            bin.insert(id.to_owned(), u);
        }
        Ok(())
    }

    async fn deleted_users(&self) -> Result<Vec<User>, DirectoryError> {
        Ok(self.deleted())
    }

    async fn restore_user(&self, id: &str) -> Result<User, DirectoryError> {
        let mut s = self.lock();
        let Some(u) = s.recycle_bin.as_ref().and_then(|b| b.get(id)).cloned() else {
            return Err(DirectoryError::NotFound("404".into()));
        };
        if s.users
            .values()
            .any(|o| same_user_name(&o.user_name, &u.user_name))
        {
            return Err(DirectoryError::Conflict("userName taken".into()));
        }
        s.restores += 1;
        if let Some(bin) = s.recycle_bin.as_mut() {
            bin.remove(id);
        }
        s.changed(id);
        s.users.insert(id.to_owned(), u.clone());
        Ok(u)
    }

    fn delta(&self) -> Option<&dyn DeltaSource> {
        Some(self)
    }
}

/// Links are `fake-delta:<sequence number>`; a read returns each user changed since, as it is
/// now (or removed), once.
#[async_trait]
impl DeltaSource for FakeDirectory {
    async fn delta_link_now(&self) -> Result<String, DirectoryError> {
        let mut s = self.lock();
        s.calls.deltas += 1;
        Ok(format!("fake-delta:{}", s.seq))
    }

    async fn read_delta(&self, link: &str) -> Result<DeltaRead, DeltaError> {
        let mut s = self.lock();
        s.calls.deltas += 1;
        let since: u64 = link
            .strip_prefix("fake-delta:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| DeltaError::Rejected("not a fake delta link".into()))?;
        if since < s.delta_floor {
            return Err(DeltaError::Rejected("400 syncStateNotFound".into()));
        }
        let mut ids: Vec<&String> = s
            .log
            .iter()
            .filter(|(n, _)| *n > since)
            .map(|(_, id)| id)
            .collect();
        ids.sort();
        ids.dedup();
        let items = ids
            .into_iter()
            .map(|id| match s.users.get(id) {
                Some(u) => DeltaItem::Changed(u.clone()),
                None => DeltaItem::Removed { id: id.clone() },
            })
            .collect();
        Ok(DeltaRead {
            items,
            link: format!("fake-delta:{}", s.seq),
        })
    }
}

/// A GUID-shaped object id made from `n` (deterministic).
pub fn guid(n: u128) -> String {
    uuid::Uuid::from_u128(n).hyphenated().to_string()
}

/// An enabled Entra member user with a full name, `mail` = its UPN.
pub fn entra_user(n: u128, upn: &str) -> User {
    let local = upn.split('@').next().unwrap_or(upn);
    User {
        id: guid(n),
        user_name: upn.to_owned(),
        upn: Some(upn.to_owned()),
        display_name: Some(format!("{local} display")),
        given_name: Some(format!("{local} given")),
        surname: Some(format!("{local} surname")),
        email: Some(upn.to_owned()),
        proxy_addresses: Vec::new(),
        active: true,
        immutable_id: None,
        guest: false,
    }
}

/// The Immutable ID [`entra_user`]`(n, ..)` gets.
pub fn immutable_id_of(n: u128) -> String {
    crate::sync::immutable_id::immutable_id_from_guid(&guid(n)).unwrap_or_default()
}

/// The destination user a first sync would create from `source` under UPN Mode Enabled.
pub fn scim_twin(id: &str, source: &User) -> User {
    User {
        id: id.to_owned(),
        user_name: source.user_name.clone(),
        upn: None,
        display_name: source.display_name.clone(),
        given_name: source.given_name.clone(),
        surname: source.surname.clone(),
        email: source.email.clone(),
        proxy_addresses: Vec::new(),
        active: source.active,
        immutable_id: Some(crate::sync::immutable_id::immutable_id(source).unwrap_or_default()),
        guest: false,
    }
}

/// A hand-made destination user (no externalId).
pub fn hand_made(id: &str, user_name: &str) -> User {
    User {
        id: id.to_owned(),
        user_name: user_name.to_owned(),
        display_name: Some(format!("{user_name} (hand-made)")),
        active: true,
        ..User::default()
    }
}
