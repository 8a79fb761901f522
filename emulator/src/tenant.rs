//! One tenant: its applications, domains and users, with a change log for delta queries.
//!
//! Readers take an `Arc<Snapshot>` (an immutable, ordered user list) and never hold a lock
//! while they serialize; writers build a new snapshot (copy-on-write of the `Arc` list).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::props;
use crate::roles::DirectoryRole;
use crate::time;
use crate::user::User;

/// An application (client) registered in the tenant.
#[derive(Clone, Debug)]
pub struct Application {
    pub client_id: String,
    pub display_name: String,
    pub secrets: Vec<String>,
    pub certificates: Vec<AppCertificate>,
    pub federated: Vec<FederatedCredential>,
    /// Application permissions granted to it (the `roles` claim).
    pub roles: Vec<String>,
    /// Object id of its service principal (the token's `oid`/`sub`).
    pub sp_object_id: String,
}

#[derive(Clone, Debug)]
pub struct AppCertificate {
    /// SHA-1 of the DER certificate (`x5t`).
    pub sha1: Vec<u8>,
    /// SHA-256 of the DER certificate (`x5t#S256`).
    pub sha256: Vec<u8>,
    /// PKCS#1 RSAPublicKey DER.
    pub rsa_public_key: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederatedCredential {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
}

#[derive(Clone, Debug)]
pub enum ChangeKind {
    /// Created, changed or restored; the names of the properties that changed
    /// (`None` = treat every property as changed).
    Upsert(Option<Vec<usize>>),
    /// Soft-deleted (restorable): `@removed: {"reason":"changed"}`.
    SoftDeleted,
    /// Permanently deleted: `@removed: {"reason":"deleted"}`.
    HardDeleted,
}

#[derive(Clone, Debug)]
pub struct Change {
    pub seq: u64,
    pub id: Box<str>,
    pub kind: ChangeKind,
}

/// An immutable view of the live users, ordered by `User::ord`.
///
/// Look-ups go through an index by object id and by UPN: a base built now and then, plus the
/// users written since (a small overlay, copied with each write). A write therefore costs the
/// copy of the user list and of the overlay, not a rebuild of both indexes (which made writes
/// O(n) with a large constant; docs/benchmarks.md, reverse apply). Entries may be stale (a
/// deleted user, an old UPN); [`Snapshot::find`] checks the user it lands on, so they only
/// cost a miss.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub users: Vec<Arc<User>>,
    base: Arc<Index>,
    recent: Index,
}

/// Lower-cased object id and UPN to `User::ord`.
#[derive(Clone, Debug, Default)]
struct Index {
    by_id: HashMap<Box<str>, u64>,
    by_upn: HashMap<Box<str>, u64>,
}

impl Index {
    fn add(&mut self, u: &User) {
        self.by_id
            .insert(u.id.to_ascii_lowercase().into_boxed_str(), u.ord);
        self.by_upn
            .insert(u.upn().to_lowercase().into_boxed_str(), u.ord);
    }
}

/// The base is rebuilt once the overlay holds this many ids or UPNs (amortised: at most one
/// rebuild per 512 writes).
const RECENT_MAX: usize = 512;

impl Snapshot {
    fn build(users: Vec<Arc<User>>) -> Snapshot {
        let mut base = Index {
            by_id: HashMap::with_capacity(users.len()),
            by_upn: HashMap::with_capacity(users.len()),
        };
        for u in &users {
            base.add(u);
        }
        Snapshot {
            users,
            base: Arc::new(base),
            recent: Index::default(),
        }
    }

    /// The snapshot after a write: `users` (ordered by `ord`), where `written` (if any) was
    /// created, changed or restored.
    fn next(&self, users: Vec<Arc<User>>, written: Option<&User>) -> Snapshot {
        // By UPN too: renames of one user add UPNs, not ids.
        if self.recent.by_id.len().max(self.recent.by_upn.len()) >= RECENT_MAX {
            return Snapshot::build(users);
        }
        let mut recent = self.recent.clone();
        if let Some(u) = written {
            recent.add(u);
        }
        Snapshot {
            users,
            base: self.base.clone(),
            recent,
        }
    }

    /// Find by object id or userPrincipalName (both case-insensitive).
    pub fn find(&self, key: &str) -> Option<&Arc<User>> {
        let lower = key.to_lowercase();
        let k = lower.as_str();
        let by_id = [self.recent.by_id.get(k), self.base.by_id.get(k)];
        by_id
            .into_iter()
            .flatten()
            .filter_map(|ord| self.at(*ord))
            .find(|u| u.id.eq_ignore_ascii_case(k))
            .or_else(|| {
                let by_upn = [self.recent.by_upn.get(k), self.base.by_upn.get(k)];
                by_upn
                    .into_iter()
                    .flatten()
                    .filter_map(|ord| self.at(*ord))
                    .find(|u| u.upn().to_lowercase() == k)
            })
    }

    /// The live user with this `ord`.
    fn at(&self, ord: u64) -> Option<&Arc<User>> {
        let i = self.users.partition_point(|u| u.ord < ord);
        self.users.get(i).filter(|u| u.ord == ord)
    }

    /// Position of the first user whose `ord` is greater than `ord`.
    pub fn position_after(&self, ord: u64) -> usize {
        self.users.partition_point(|u| u.ord <= ord)
    }
}

#[derive(Debug)]
struct State {
    snap: Arc<Snapshot>,
    seq: u64,
    next_ord: u64,
    log: Vec<Change>,
    deleted: HashMap<Box<str>, Arc<User>>,
    epoch: u64,
}

/// What a tenant was loaded with, so that a reset can restore it.
#[derive(Clone, Debug)]
pub struct TenantSpec {
    pub tenant_id: String,
    pub display_name: String,
    pub initial_domain: String,
    pub domains: Vec<Value>,
    pub applications: Vec<Application>,
    pub users: Vec<User>,
    /// `directoryRoles` of the fixture (`roles.rs`): whose members need a privileged app.
    pub directory_roles: Vec<DirectoryRole>,
}

#[derive(Debug)]
pub struct Tenant {
    pub id: String,
    pub display_name: String,
    pub initial_domain: String,
    pub domains: Vec<Value>,
    apps: RwLock<Vec<Arc<Application>>>,
    roles: RwLock<Vec<DirectoryRole>>,
    state: RwLock<State>,
    /// What a reset restores: the loaded users (shared with the first snapshot), apps and roles.
    initial_users: Vec<Arc<User>>,
    initial_apps: Vec<Application>,
    initial_roles: Vec<DirectoryRole>,
}

/// What a tenant says of the domain part of a UPN (`domains[]` of the fixture).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainInfo {
    pub verified: bool,
    pub federated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MutationError {
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "Resource '{0}' does not exist or one of its queried reference-property objects are not present."
    )]
    NotFound(String),
    #[error("Another object with the same value for property userPrincipalName already exists.")]
    DuplicateUpn,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Tenant {
    pub fn new(mut spec: TenantSpec, epoch: u64) -> Tenant {
        let users = std::mem::take(&mut spec.users);
        let initial_users: Vec<Arc<User>> = users
            .into_iter()
            .enumerate()
            .map(|(i, mut u)| {
                u.ord = i as u64 + 1;
                Arc::new(u)
            })
            .collect();
        let state = Self::initial_state(&initial_users, epoch);
        Tenant {
            id: spec.tenant_id,
            display_name: spec.display_name,
            initial_domain: spec.initial_domain,
            domains: spec.domains,
            apps: RwLock::new(spec.applications.iter().cloned().map(Arc::new).collect()),
            roles: RwLock::new(spec.directory_roles.clone()),
            state: RwLock::new(state),
            initial_users,
            initial_apps: spec.applications,
            initial_roles: spec.directory_roles,
        }
    }

    fn initial_state(users: &[Arc<User>], epoch: u64) -> State {
        State {
            snap: Arc::new(Snapshot::build(users.to_vec())),
            seq: 1,
            next_ord: users.len() as u64 + 1,
            log: Vec::new(),
            deleted: HashMap::new(),
            epoch,
        }
    }

    /// Restore the state the tenant was loaded with. Old delta tokens become invalid.
    pub fn reset(&self, epoch: u64) {
        *write(&self.state) = Self::initial_state(&self.initial_users, epoch);
        *write(&self.apps) = self.initial_apps.iter().cloned().map(Arc::new).collect();
        *write(&self.roles) = self.initial_roles.clone();
    }

    /// The tenant's verified-ness and authentication type for the domain of `upn`
    /// (case-insensitive); `None` when the tenant has no such domain.
    pub fn domain_of(&self, upn: &str) -> Option<DomainInfo> {
        let domain = upn.rsplit_once('@').map(|x| x.1)?;
        self.domains
            .iter()
            .find(|d| {
                d.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.eq_ignore_ascii_case(domain))
            })
            .map(|d| DomainInfo {
                verified: d.get("isVerified").and_then(Value::as_bool).unwrap_or(true),
                federated: d
                    .get("authenticationType")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case("Federated")),
            })
    }

    pub fn directory_roles(&self) -> Vec<DirectoryRole> {
        read(&self.roles).clone()
    }

    pub fn set_directory_roles(&self, roles: Vec<DirectoryRole>) {
        *write(&self.roles) = roles;
    }

    /// The roles whose members include any of `ids` (a user id, or an app's client id and
    /// service principal id).
    pub fn roles_of(&self, ids: &[&str]) -> Vec<DirectoryRole> {
        read(&self.roles)
            .iter()
            .filter(|r| ids.iter().any(|id| r.has_member(id)))
            .cloned()
            .collect()
    }

    /// Does this tenant answer to `name` (its id, or one of its domains)?
    pub fn answers_to(&self, name: &str) -> bool {
        self.id.eq_ignore_ascii_case(name)
            || self.domains.iter().any(|d| {
                d.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.eq_ignore_ascii_case(name))
            })
    }

    pub fn app(&self, client_id: &str) -> Option<Arc<Application>> {
        read(&self.apps)
            .iter()
            .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
            .cloned()
    }

    pub fn apps(&self) -> Vec<Arc<Application>> {
        read(&self.apps).clone()
    }

    pub fn upsert_app(&self, app: Application) {
        let mut apps = write(&self.apps);
        apps.retain(|a| !a.client_id.eq_ignore_ascii_case(&app.client_id));
        apps.push(Arc::new(app));
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        read(&self.state).snap.clone()
    }

    /// `(snapshot, current change sequence, epoch)` read atomically.
    pub fn view(&self) -> (Arc<Snapshot>, u64, u64) {
        let s = read(&self.state);
        (s.snap.clone(), s.seq, s.epoch)
    }

    pub fn epoch(&self) -> u64 {
        read(&self.state).epoch
    }

    /// Changes with `since < seq <= until`, in order.
    pub fn changes(&self, since: u64, until: u64) -> Vec<Change> {
        let s = read(&self.state);
        let start = s.log.partition_point(|c| c.seq <= since);
        s.log[start..]
            .iter()
            .take_while(|c| c.seq <= until)
            .cloned()
            .collect()
    }

    pub fn user_count(&self) -> usize {
        read(&self.state).snap.users.len()
    }

    /// `written`: the user created, changed or restored (none for a delete).
    fn commit(st: &mut State, users: Vec<Arc<User>>, written: Option<&User>, change: Change) {
        st.snap = Arc::new(st.snap.next(users, written));
        st.log.push(change);
    }

    /// Create a user from a Graph user object; `id` is generated when absent.
    pub fn add_user(&self, obj: &Map<String, Value>) -> Result<Arc<User>, MutationError> {
        let mut obj = obj.clone();
        if !obj.contains_key("id") {
            obj.insert("id".into(), Value::String(uuid::Uuid::new_v4().to_string()));
        }
        if !obj.contains_key("accountEnabled") {
            obj.insert("accountEnabled".into(), Value::Bool(true));
        }
        if !obj.contains_key("userType") {
            obj.insert("userType".into(), Value::String("Member".into()));
        }
        let user = User::from_graph(&obj).map_err(MutationError::BadRequest)?;
        self.insert_user(user, |_| Ok::<(), MutationError>(()))
    }

    /// Add a user. `check` runs under the write lock, after the UPN and id checks, so that a
    /// uniqueness rule it applies (immutable id, proxy addresses) cannot race another write.
    pub fn insert_user<E: From<MutationError>>(
        &self,
        mut user: User,
        check: impl FnOnce(&Snapshot) -> Result<(), E>,
    ) -> Result<Arc<User>, E> {
        let mut st = write(&self.state);
        if st.snap.find(user.upn()).is_some() {
            return Err(MutationError::DuplicateUpn.into());
        }
        if st.snap.find(&user.id).is_some()
            || st
                .deleted
                .contains_key(user.id.to_ascii_lowercase().as_str())
        {
            return Err(MutationError::BadRequest(format!(
                "Another object with the same value for property id already exists: '{}'.",
                user.id
            ))
            .into());
        }
        check(&st.snap)?;
        user.ord = st.next_ord;
        st.next_ord += 1;
        st.seq += 1;
        let user = Arc::new(user);
        let mut users = st.snap.users.clone();
        users.push(user.clone());
        let change = Change {
            seq: st.seq,
            id: user.id.clone(),
            kind: ChangeKind::Upsert(None),
        };
        Self::commit(&mut st, users, Some(&*user), change);
        Ok(user)
    }

    /// Apply a partial Graph user object to an existing user.
    pub fn update_user(
        &self,
        key: &str,
        patch: &Map<String, Value>,
    ) -> Result<Arc<User>, MutationError> {
        self.update_with(key, |_, old| {
            let mut user = (**old).clone();
            let mut changed = Vec::new();
            for (k, v) in patch {
                let Some(p) = props::lookup(k) else {
                    return Err(MutationError::BadRequest(format!(
                        "Invalid property '{k}': the user resource has no such property."
                    )));
                };
                if props::PROPS[p].slot == props::Slot::Id {
                    return Err(MutationError::BadRequest(
                        "Property 'id' is read-only and cannot be set.".into(),
                    ));
                }
                user.set_prop(p, v).map_err(MutationError::BadRequest)?;
                changed.push(p);
            }
            Ok((user, changed))
        })
    }

    /// Replace a user with what `build` makes of it (the new user and the properties the
    /// change named, for delta). `build` runs under the write lock; the UPN stays unique.
    pub fn update_with<E: From<MutationError>>(
        &self,
        key: &str,
        build: impl FnOnce(&Snapshot, &Arc<User>) -> Result<(User, Vec<usize>), E>,
    ) -> Result<Arc<User>, E> {
        let mut st = write(&self.state);
        let Some(old) = st.snap.find(key).cloned() else {
            return Err(MutationError::NotFound(key.to_string()).into());
        };
        let (mut user, changed) = build(&st.snap, &old)?;
        user.id = old.id.clone();
        user.ord = old.ord;
        if user.upn().is_empty() {
            return Err(
                MutationError::BadRequest("'userPrincipalName' cannot be empty.".into()).into(),
            );
        }
        if !user.upn().eq_ignore_ascii_case(old.upn())
            && st.snap.find(user.upn()).is_some_and(|o| o.id != user.id)
        {
            return Err(MutationError::DuplicateUpn.into());
        }
        st.seq += 1;
        let user = Arc::new(user);
        let mut users = st.snap.users.clone();
        let pos = st.snap.position_after(old.ord.saturating_sub(1));
        if let Some(slot) = users.get_mut(pos) {
            *slot = user.clone();
        }
        let change = Change {
            seq: st.seq,
            id: user.id.clone(),
            kind: ChangeKind::Upsert(Some(changed)),
        };
        Self::commit(&mut st, users, Some(&*user), change);
        Ok(user)
    }

    /// Delete a user: soft (restorable, delta reason `changed`) or permanent (`deleted`).
    pub fn delete_user(&self, key: &str, permanent: bool) -> Result<(), MutationError> {
        self.delete_user_at(key, permanent, time::now_secs())
    }

    /// As [`Tenant::delete_user`]; a soft-deleted user's `deletedDateTime` is `now` (Unix
    /// seconds, the emulator's clock).
    pub fn delete_user_at(
        &self,
        key: &str,
        permanent: bool,
        now: i64,
    ) -> Result<(), MutationError> {
        let mut st = write(&self.state);
        let lower = key.to_ascii_lowercase();
        if permanent && let Some(u) = st.deleted.remove(lower.as_str()) {
            // Purging an already soft-deleted user.
            Self::log_purge(&mut st, &u);
            return Ok(());
        }
        let Some(old) = st.snap.find(key).cloned() else {
            return Err(MutationError::NotFound(key.to_string()));
        };
        st.seq += 1;
        let users: Vec<Arc<User>> = st
            .snap
            .users
            .iter()
            .filter(|u| u.ord != old.ord)
            .cloned()
            .collect();
        let kind = if permanent {
            ChangeKind::HardDeleted
        } else {
            let mut gone = (*old).clone();
            let _ = gone.set_prop(
                props::idx("deletedDateTime"),
                &Value::String(time::iso_z(now)),
            );
            st.deleted
                .insert(old.id.to_ascii_lowercase().into_boxed_str(), Arc::new(gone));
            ChangeKind::SoftDeleted
        };
        let change = Change {
            seq: st.seq,
            id: old.id.clone(),
            kind,
        };
        Self::commit(&mut st, users, None, change);
        Ok(())
    }

    /// Restore a soft-deleted user (it shows in delta again, without annotation).
    pub fn restore_user(&self, id: &str) -> Result<Arc<User>, MutationError> {
        let mut st = write(&self.state);
        let Some(user) = st.deleted.remove(id.to_ascii_lowercase().as_str()) else {
            return Err(MutationError::NotFound(id.to_string()));
        };
        if st.snap.find(user.upn()).is_some() {
            st.deleted
                .insert(user.id.to_ascii_lowercase().into_boxed_str(), user);
            return Err(MutationError::DuplicateUpn);
        }
        st.seq += 1;
        let mut back = (*user).clone();
        let _ = back.set_prop(props::idx("deletedDateTime"), &Value::Null);
        let user = Arc::new(back);
        let mut users = st.snap.users.clone();
        let pos = users.partition_point(|u| u.ord < user.ord);
        users.insert(pos, user.clone());
        let change = Change {
            seq: st.seq,
            id: user.id.clone(),
            kind: ChangeKind::Upsert(None),
        };
        Self::commit(&mut st, users, Some(&*user), change);
        Ok(user)
    }

    /// The soft-deleted users, by `ord` (a stable order for paging a delta round through them).
    pub fn deleted_users(&self) -> Vec<Arc<User>> {
        let mut users: Vec<Arc<User>> = read(&self.state).deleted.values().cloned().collect();
        users.sort_unstable_by_key(|u| u.ord);
        users
    }

    /// A soft-deleted user by object id (case-insensitive).
    pub fn deleted_user(&self, id: &str) -> Option<Arc<User>> {
        read(&self.state)
            .deleted
            .get(id.to_ascii_lowercase().as_str())
            .cloned()
    }

    /// Permanently delete a soft-deleted user (`DELETE /directory/deletedItems/{id}`); a live
    /// user is not found here.
    pub fn purge_deleted(&self, id: &str) -> Result<(), MutationError> {
        let mut st = write(&self.state);
        let Some(u) = st.deleted.remove(id.to_ascii_lowercase().as_str()) else {
            return Err(MutationError::NotFound(id.to_string()));
        };
        Self::log_purge(&mut st, &u);
        Ok(())
    }

    /// A soft-deleted user `u`, just taken out of deleted items, is gone for good: delta's
    /// `@removed: deleted` from now on.
    fn log_purge(st: &mut State, u: &User) {
        st.seq += 1;
        let change = Change {
            seq: st.seq,
            id: u.id.clone(),
            kind: ChangeKind::HardDeleted,
        };
        st.log.push(change);
    }

    pub fn deleted_ids(&self) -> Vec<String> {
        read(&self.state)
            .deleted
            .values()
            .map(|u| u.id.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tenant() -> Tenant {
        Tenant::new(
            TenantSpec {
                tenant_id: "t".into(),
                display_name: "t".into(),
                initial_domain: "t.onmicrosoft.com".into(),
                domains: Vec::new(),
                applications: Vec::new(),
                users: Vec::new(),
                directory_roles: Vec::new(),
            },
            1,
        )
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    /// What `find` must answer: a plain scan of the live users.
    fn scan<'a>(snap: &'a Snapshot, key: &str) -> Option<&'a Arc<User>> {
        let k = key.to_lowercase();
        snap.users
            .iter()
            .find(|u| u.id.eq_ignore_ascii_case(&k))
            .or_else(|| snap.users.iter().find(|u| u.upn().to_lowercase() == k))
    }

    /// Random creates, renames (onto freed UPNs too), soft and hard deletes and restores, across
    /// several rebuilds of the base index: `find` answers as a scan of the live users does, for
    /// every id and UPN ever used, in any case.
    #[test]
    fn find_answers_as_a_scan_through_renames_deletes_restores_and_rebuilds() {
        let t = tenant();
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut keys: Vec<String> = Vec::new();
        let mut ids: Vec<String> = Vec::new();
        for step in 0..3000u64 {
            let n = next();
            let upn = format!("u{}@example.com", n % 400);
            match n % 7 {
                0..=2 => {
                    if let Ok(u) = t.add_user(&obj(
                        json!({ "userPrincipalName": upn, "displayName": "U" }),
                    )) {
                        ids.push(u.id.to_string());
                        keys.push(u.id.to_string());
                    }
                    keys.push(upn);
                }
                3 | 4 if !ids.is_empty() => {
                    let id = &ids[(next() % ids.len() as u64) as usize];
                    let _ = t.update_user(id, &obj(json!({ "userPrincipalName": upn })));
                    keys.push(upn);
                }
                5 if !ids.is_empty() => {
                    let id = &ids[(next() % ids.len() as u64) as usize];
                    let _ = t.delete_user(id, next() % 4 == 0);
                }
                _ if !ids.is_empty() => {
                    let id = &ids[(next() % ids.len() as u64) as usize];
                    let _ = t.restore_user(id);
                }
                _ => {}
            }
            if keys.is_empty() {
                continue;
            }
            let snap = t.snapshot();
            let check = |key: &str| {
                let shouted = key.to_uppercase();
                for k in [key, shouted.as_str()] {
                    assert_eq!(
                        snap.find(k).map(|u| u.ord),
                        scan(&snap, k).map(|u| u.ord),
                        "step {step}: {k}"
                    );
                }
            };
            if step % 500 == 499 {
                keys.iter().for_each(|k| check(k));
            } else {
                for _ in 0..8 {
                    check(&keys[(next() % keys.len() as u64) as usize]);
                }
            }
        }
        assert!(t.user_count() > 100, "{}", t.user_count());
    }
}
