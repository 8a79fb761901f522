//! Matching and the plan (docs/behaviour.md §2.4–2.5): what a run would do to the destination.
//!
//! Pure and deterministic: the same inputs give the same plan, in the same order, whatever
//! order the directories listed their users in. Planning works in two passes so that 100k
//! users cost two hash maps and no copies: the first pass decides with borrowed data and
//! indexes, the second moves each source and destination user into the one plan item that
//! needs it.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::directory::{DesiredUser, User};
use crate::sync::config::{DeletionPolicy, SyncConfig, ends_with_ignore_ascii_case};
use crate::sync::managed::{ManagedEntry, ManagedSet};
use crate::sync::mapping::MappedUser;

/// A preview row's action, in the order the preview lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    Add,
    Update,
    Delete,
    Conflict,
    Unmanaged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Add => "Add",
            Action::Update => "Update",
            Action::Delete => "Delete",
            Action::Conflict => "Conflict",
            Action::Unmanaged => "Unmanaged",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sync item, named as the preview's columns name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    UserName,
    UserPrincipalName,
    DisplayName,
    GivenName,
    Surname,
    Email,
    Active,
    ExternalId,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::UserName => "userName",
            Field::UserPrincipalName => "userPrincipalName",
            Field::DisplayName => "displayName",
            Field::GivenName => "givenName",
            Field::Surname => "surname",
            Field::Email => "email",
            Field::Active => "active",
            Field::ExternalId => "externalId",
        }
    }
}

/// One field an Update changes; `None` = absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub field: Field,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// Shown in the `changes` column for an absent value.
pub const ABSENT: &str = "(none)";

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} -> {}",
            self.field.as_str(),
            self.old.as_deref().unwrap_or(ABSENT),
            self.new.as_deref().unwrap_or(ABSENT)
        )
    }
}

impl Change {
    /// `active: true -> false`: a deactivation, which the deletion guard counts.
    pub fn is_deactivation(&self) -> bool {
        self.field == Field::Active
            && self.old.as_deref() == Some("true")
            && self.new.as_deref() == Some("false")
    }
}

/// Why an Update happens, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    /// A managed user whose sync items changed.
    Sync,
    /// A pre-existing destination user taken over by userName (`adoptExisting`); sets externalId.
    Adopt,
    /// A destination user carrying our Immutable ID that is not in the managed set (e.g. a crash
    /// between create and record, or a lost state): taken back by externalId.
    Retake,
    /// A user another resource sharing the destination manages, now in this resource's
    /// source: handed over to this resource (the other releases it on its next run).
    TakeOver,
    /// Removal under `deletionPolicy: Deactivate`.
    Deactivate,
}

/// Values a preview row shows when they are not a write's (conflict rows).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowValues {
    pub user_name: String,
    pub upn: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub email: Option<String>,
    pub active: bool,
    pub immutable_id: Option<String>,
}

impl RowValues {
    fn from_source(s: &MappedUser) -> Self {
        let d = &s.desired;
        Self {
            user_name: d.user_name.clone(),
            upn: Some(s.upn.clone()),
            display_name: d.display_name.clone(),
            given_name: d.given_name.clone(),
            surname: d.surname.clone(),
            email: d.email.clone(),
            active: d.active,
            immutable_id: Some(d.immutable_id.clone()),
        }
    }

    fn from_destination(u: &User) -> Self {
        Self {
            user_name: u.user_name.clone(),
            upn: u.upn.clone(),
            display_name: u.display_name.clone(),
            given_name: u.given_name.clone(),
            surname: u.surname.clone(),
            email: u.email.clone(),
            active: u.active,
            immutable_id: u.immutable_id.clone(),
        }
    }
}

/// One row of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanItem {
    /// Create `desired` (it carries the externalId, so a crash between create and record heals
    /// on the next run by the externalId match).
    Add {
        source_id: String,
        upn: String,
        desired: DesiredUser,
        resource_like: bool,
    },
    /// Bring `current` to `desired`, only while it still carries `expected_immutable_id`.
    /// Boxed: it holds two users, and rows are kept by the 100k.
    Update(Box<UpdateItem>),
    /// Delete `current`, a managed user no longer in the source.
    Delete { current: User, immutable_id: String },
    /// Reported, never applied.
    Conflict {
        shown: RowValues,
        reason: String,
        resource_like: bool,
    },
    /// A destination user in this domain's scope that nothing matches or manages.
    Unmanaged { current: User },
}

/// An Update row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateItem {
    pub kind: UpdateKind,
    pub source_id: String,
    /// Shown in the preview's userPrincipalName column.
    pub upn: Option<String>,
    /// The destination user as listed at plan time.
    pub current: User,
    pub desired: DesiredUser,
    pub changes: Vec<Change>,
    pub expected_immutable_id: Option<String>,
    pub resource_like: bool,
}

/// A borrowed view of what a preview row shows.
#[derive(Clone, Copy, Debug)]
pub struct RowView<'a> {
    pub action: Action,
    pub user_name: &'a str,
    pub upn: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub given_name: Option<&'a str>,
    pub surname: Option<&'a str>,
    pub email: Option<&'a str>,
    pub active: bool,
    pub immutable_id: Option<&'a str>,
}

impl PlanItem {
    pub fn action(&self) -> Action {
        match self {
            PlanItem::Add { .. } => Action::Add,
            PlanItem::Update(_) => Action::Update,
            PlanItem::Delete { .. } => Action::Delete,
            PlanItem::Conflict { .. } => Action::Conflict,
            PlanItem::Unmanaged { .. } => Action::Unmanaged,
        }
    }

    /// The values the preview shows: the desired values for Add and Update, the destination's
    /// for Delete and Unmanaged.
    pub fn view(&self) -> RowView<'_> {
        let action = self.action();
        match self {
            PlanItem::Add { upn, desired, .. } => desired_view(action, desired, Some(upn)),
            PlanItem::Update(u) => desired_view(action, &u.desired, u.upn.as_deref()),
            PlanItem::Delete { current, .. } | PlanItem::Unmanaged { current } => RowView {
                action,
                user_name: &current.user_name,
                upn: current.upn.as_deref(),
                display_name: current.display_name.as_deref(),
                given_name: current.given_name.as_deref(),
                surname: current.surname.as_deref(),
                email: current.email.as_deref(),
                active: current.active,
                immutable_id: current.immutable_id.as_deref(),
            },
            PlanItem::Conflict { shown, .. } => RowView {
                action,
                user_name: &shown.user_name,
                upn: shown.upn.as_deref(),
                display_name: shown.display_name.as_deref(),
                given_name: shown.given_name.as_deref(),
                surname: shown.surname.as_deref(),
                email: shown.email.as_deref(),
                active: shown.active,
                immutable_id: shown.immutable_id.as_deref(),
            },
        }
    }

    /// The user name shown in the preview (the key rows are sorted by).
    pub fn user_name(&self) -> &str {
        self.view().user_name
    }

    /// Whether the guard counts this item: a Delete, or an Update that sets `active` from true
    /// to false (which includes every removal under `deletionPolicy: Deactivate`).
    pub fn is_deletion(&self) -> bool {
        match self {
            PlanItem::Delete { .. } => true,
            PlanItem::Update(u) => u.changes.iter().any(Change::is_deactivation),
            _ => false,
        }
    }

    /// Whether applying this item writes to the destination.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            PlanItem::Add { .. } | PlanItem::Update(_) | PlanItem::Delete { .. }
        )
    }

    /// The preview's `changes` cell: field changes, the conflict reason, then warnings and notes,
    /// joined by `; `.
    pub fn changes_text(&self) -> String {
        let mut out = String::new();
        let mut push = |s: &dyn std::fmt::Display| {
            use std::fmt::Write as _;
            if !out.is_empty() {
                out.push_str("; ");
            }
            let _ = write!(out, "{s}");
        };
        match self {
            PlanItem::Add { resource_like, .. } => {
                if *resource_like {
                    push(&RESOURCE_LIKE_WARNING);
                }
                push(&INITIAL_PASSWORD_NOTE);
            }
            PlanItem::Update(u) => {
                for c in &u.changes {
                    push(c);
                }
                if u.kind == UpdateKind::TakeOver {
                    push(&TAKE_OVER_NOTE);
                }
                if u.resource_like {
                    push(&RESOURCE_LIKE_WARNING);
                }
            }
            PlanItem::Conflict {
                reason,
                resource_like,
                ..
            } => {
                push(reason);
                if *resource_like {
                    push(&RESOURCE_LIKE_WARNING);
                }
            }
            PlanItem::Delete { .. } | PlanItem::Unmanaged { .. } => {}
        }
        out
    }
}

/// `changes` text for a resource-like account (docs/behaviour.md §4).
pub const RESOURCE_LIKE_WARNING: &str = "warning: resource-like account";
/// `changes` text for every Add: a created user has no password (docs/behaviour.md §2.2, §4).
pub const INITIAL_PASSWORD_NOTE: &str = "note: initial password required";
/// `changes` text for a user handed over from another resource sharing the destination.
pub const TAKE_OVER_NOTE: &str = "note: handed over from another DirectorySync";

fn desired_view<'a>(action: Action, d: &'a DesiredUser, upn: Option<&'a str>) -> RowView<'a> {
    RowView {
        action,
        user_name: &d.user_name,
        upn,
        display_name: d.display_name.as_deref(),
        given_name: d.given_name.as_deref(),
        surname: d.surname.as_deref(),
        email: d.email.as_deref(),
        active: d.active,
        immutable_id: Some(&d.immutable_id),
    }
}

/// A managed user released to another resource without a write (docs/behaviour.md §2.5 hand-over).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandedOver {
    pub immutable_id: String,
    pub user_name: String,
}

/// What other resources that write to the same destination know, as far as this plan needs.
#[derive(Clone, Copy, Debug)]
pub struct PlanContext<'a> {
    /// This resource's managed set as loaded.
    pub managed: &'a ManagedSet,
    /// Immutable IDs in the managed sets of other resources sharing this destination: never
    /// deleted or shown as Unmanaged by this one.
    pub managed_elsewhere: &'a HashSet<String>,
    /// Managed users missing from this source that now belong to another synced domain (the
    /// engine looked them up): released with no write.
    pub handed_over: &'a HashSet<String>,
}

/// The plan of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Rows in preview order: Add, Update, Delete, Conflict, Unmanaged, then by lower-cased
    /// userName (then Immutable ID, so that the order never depends on listing order).
    pub items: Vec<PlanItem>,
    /// Users in both directories that need no write (and managed users already inactive that
    /// left the source under `Deactivate`).
    pub unchanged: usize,
    /// Users released to another resource, by userName.
    pub handed_over: Vec<HandedOver>,
    /// Managed users still present in the destination at plan time (the guard's base).
    pub managed_present: usize,
    /// Managed users no longer in the destination at all; dropped from the set.
    pub managed_gone: usize,
    /// The managed set as it stands after this plan if no write is made or every write fails:
    /// hand-overs and vanished users released, unchanged re-taken users recorded. Applying
    /// starts from it and records each write that succeeds.
    pub baseline: ManagedSet,
}

impl Plan {
    /// Number of rows with `action`.
    pub fn count(&self, action: Action) -> usize {
        self.items.iter().filter(|i| i.action() == action).count()
    }

    /// Deletes plus deactivations: what the guard counts.
    pub fn deletions(&self) -> usize {
        self.items.iter().filter(|i| i.is_deletion()).count()
    }

    /// Number of writes applying would make.
    pub fn writes(&self) -> usize {
        self.items.iter().filter(|i| i.is_write()).count()
    }
}

/// Lower-case form used for userName matching (SCIM `userName` is case-insensitive).
pub fn fold_user_name(name: &str) -> Cow<'_, str> {
    if name.chars().any(char::is_uppercase) {
        Cow::Owned(name.to_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Two user names that SCIM considers the same.
pub fn same_user_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
        || (!(a.is_ascii() && b.is_ascii()) && fold_user_name(a) == fold_user_name(b))
}

/// The fields an update of `current` to `desired` changes. `userName` is compared
/// case-insensitively (a SCIM server may store it in another case; a case-only rename would
/// otherwise be sent on every run); the other items exactly, with an empty string the same as
/// absent. The UPN attribute is compared only when it is carried.
pub fn diff(current: &User, desired: &DesiredUser, carry_upn: bool) -> Vec<Change> {
    let mut changes = Vec::new();
    if !same_user_name(&current.user_name, &desired.user_name) {
        changes.push(Change {
            field: Field::UserName,
            old: Some(current.user_name.clone()),
            new: Some(desired.user_name.clone()),
        });
    }
    if carry_upn {
        opt_change(
            &mut changes,
            Field::UserPrincipalName,
            &current.upn,
            &desired.upn,
        );
    }
    opt_change(
        &mut changes,
        Field::DisplayName,
        &current.display_name,
        &desired.display_name,
    );
    opt_change(
        &mut changes,
        Field::GivenName,
        &current.given_name,
        &desired.given_name,
    );
    opt_change(
        &mut changes,
        Field::Surname,
        &current.surname,
        &desired.surname,
    );
    opt_change(&mut changes, Field::Email, &current.email, &desired.email);
    if current.active != desired.active {
        changes.push(Change {
            field: Field::Active,
            old: Some(current.active.to_string()),
            new: Some(desired.active.to_string()),
        });
    }
    changes
}

fn opt_change(changes: &mut Vec<Change>, field: Field, old: &Option<String>, new: &Option<String>) {
    let old = old.as_deref().filter(|s| !s.is_empty());
    let new = new.as_deref().filter(|s| !s.is_empty());
    if old != new {
        changes.push(Change {
            field,
            old: old.map(str::to_owned),
            new: new.map(str::to_owned),
        });
    }
}

/// Where a key was found among the destination users.
#[derive(Clone, Copy, Debug)]
enum Hits {
    One(usize),
    Many(usize),
}

fn index_insert<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Hits>, key: K, idx: usize) {
    map.entry(key)
        .and_modify(|h| {
            *h = match *h {
                Hits::One(_) => Hits::Many(2),
                Hits::Many(n) => Hits::Many(n + 1),
            }
        })
        .or_insert(Hits::One(idx));
}

/// How far a destination user is spoken for in this plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Nothing refers to it yet (a candidate for Unmanaged).
    Free,
    /// A Conflict row refers to it; it is not written.
    Referenced,
    /// An Update, Delete or unchanged match owns it.
    Claimed,
}

/// Whether a source user shares a key with another source user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Duplicate {
    None,
    UserName,
    ImmutableId,
}

/// First-pass decision for one source user.
enum SourceDecision {
    Add,
    Update {
        dest: usize,
        kind: UpdateKind,
        changes: Vec<Change>,
        expected: Option<String>,
    },
    Unchanged {
        dest: usize,
    },
    Conflict {
        reason: String,
    },
}

/// First-pass decision for one managed user missing from the source.
enum MissingDecision {
    Delete { dest: usize },
    Deactivate { dest: usize },
    Conflict { shown: RowValues, reason: String },
}

/// Plans a run. `source` is the mapped source; `destination` every destination user in the
/// SCIM reading (`immutable_id` = externalId, `upn` = the UPN attribute). Both are consumed:
/// their strings move into the plan.
pub fn plan(
    cfg: &SyncConfig,
    source: Vec<MappedUser>,
    destination: Vec<User>,
    ctx: &PlanContext<'_>,
) -> Plan {
    let suffix = cfg.domain_suffix();
    let protected: HashSet<String> = cfg
        .protected_user_names
        .iter()
        .map(|n| fold_user_name(n).into_owned())
        .collect();
    let is_protected =
        |name: &str| !protected.is_empty() && protected.contains(fold_user_name(name).as_ref());

    // Indexes over borrowed destination data.
    let mut by_ext: HashMap<&str, Hits> = HashMap::with_capacity(destination.len());
    let mut by_name: HashMap<Cow<'_, str>, Hits> = HashMap::with_capacity(destination.len());
    for (i, d) in destination.iter().enumerate() {
        if let Some(ext) = d.immutable_id.as_deref().filter(|e| !e.is_empty()) {
            index_insert(&mut by_ext, ext, i);
        }
        index_insert(&mut by_name, fold_user_name(&d.user_name), i);
    }
    let mut slots = vec![Slot::Free; destination.len()];

    // Duplicates within the source would make two users fight over one destination user.
    // One insert per key: the first holder's index is kept, and a second holder marks both.
    let mut src_ext: HashMap<&str, usize> = HashMap::with_capacity(source.len());
    let mut dup = vec![Duplicate::None; source.len()];
    {
        let mut src_name: HashMap<Cow<'_, str>, usize> = HashMap::with_capacity(source.len());
        for (i, s) in source.iter().enumerate() {
            if let Some(&first) = src_name.get(fold_user_name(&s.desired.user_name).as_ref()) {
                dup[first] = Duplicate::UserName;
                dup[i] = Duplicate::UserName;
            } else {
                src_name.insert(fold_user_name(&s.desired.user_name), i);
            }
            // Immutable ID duplicates win: they say more about the source being wrong.
            if let Some(&first) = src_ext.get(s.desired.immutable_id.as_str()) {
                dup[first] = Duplicate::ImmutableId;
                dup[i] = Duplicate::ImmutableId;
            } else {
                src_ext.insert(s.desired.immutable_id.as_str(), i);
            }
        }
    }

    let mut baseline = ctx.managed.clone();
    let mut unchanged = 0usize;

    // Pass 1a: each source user.
    let mut decisions: Vec<SourceDecision> = Vec::with_capacity(source.len());
    for (i, s) in source.iter().enumerate() {
        let imm = s.desired.immutable_id.as_str();
        let recorded = ctx.managed.get(imm);
        let d = decide_source(
            cfg,
            s,
            dup[i],
            recorded.is_some(),
            &destination,
            &by_ext,
            &by_name,
            &mut slots,
            ctx,
            &is_protected,
        );
        match &d {
            SourceDecision::Unchanged { dest } => {
                unchanged += 1;
                let current = &destination[*dest];
                let fresh = recorded.is_some_and(|e| {
                    e.destination_id == current.id
                        && e.source_id == s.source_id
                        && e.user_name == current.user_name
                });
                if !fresh {
                    baseline.insert(
                        imm,
                        ManagedEntry::new(&current.id, &s.source_id, &current.user_name),
                    );
                }
            }
            // Re-created on success; the old destination user is gone.
            SourceDecision::Add => {
                baseline.remove(imm);
            }
            SourceDecision::Conflict { .. } if !by_ext.contains_key(imm) => {
                baseline.remove(imm);
            }
            _ => {}
        }
        decisions.push(d);
    }

    // Pass 1b: managed users no longer in the source.
    let mut handed_over = Vec::new();
    let mut missing: Vec<MissingDecision> = Vec::new();
    let mut managed_present = 0usize;
    let mut managed_gone = 0usize;
    for (imm, entry) in ctx.managed.iter() {
        let hits = by_ext.get(imm).copied();
        if hits.is_some() {
            managed_present += 1;
        }
        if src_ext.contains_key(imm) {
            continue;
        }
        if ctx.handed_over.contains(imm) || ctx.managed_elsewhere.contains(imm) {
            handed_over.push(HandedOver {
                immutable_id: imm.to_owned(),
                user_name: entry.user_name.clone(),
            });
            baseline.remove(imm);
            if let Some(Hits::One(i)) = hits {
                slots[i] = Slot::Claimed;
            }
            continue;
        }
        match hits {
            None => {
                managed_gone += 1;
                baseline.remove(imm);
            }
            Some(Hits::Many(n)) => missing.push(MissingDecision::Conflict {
                shown: RowValues {
                    user_name: entry.user_name.clone(),
                    immutable_id: Some(imm.to_owned()),
                    ..RowValues::default()
                },
                reason: format!("{n} destination users carry this externalId; not removed"),
            }),
            Some(Hits::One(i)) => {
                let current = &destination[i];
                if slots[i] == Slot::Claimed {
                    // Cannot happen (its externalId is in no source user), but never write twice.
                    missing.push(MissingDecision::Conflict {
                        shown: RowValues::from_destination(current),
                        reason: "destination user is matched by another source user; not removed"
                            .into(),
                    });
                } else if is_protected(&current.user_name) {
                    slots[i] = Slot::Claimed;
                    missing.push(MissingDecision::Conflict {
                        shown: RowValues::from_destination(current),
                        reason: "userName is in protectedUserNames; not removed".into(),
                    });
                } else {
                    slots[i] = Slot::Claimed;
                    match cfg.deletion_policy {
                        DeletionPolicy::Delete => missing.push(MissingDecision::Delete { dest: i }),
                        DeletionPolicy::Deactivate if current.active => {
                            missing.push(MissingDecision::Deactivate { dest: i })
                        }
                        DeletionPolicy::Deactivate => unchanged += 1,
                    }
                }
            }
        }
    }

    // Pass 1c: stray destination users in this domain's scope.
    let mut unmanaged: Vec<usize> = Vec::new();
    for (i, d) in destination.iter().enumerate() {
        if slots[i] != Slot::Free {
            continue;
        }
        if let Some(ext) = d.immutable_id.as_deref().filter(|e| !e.is_empty())
            && (ctx.managed.contains(ext)
                || ctx.managed_elsewhere.contains(ext)
                || src_ext.contains_key(ext))
        {
            continue;
        }
        let in_scope = ends_with_ignore_ascii_case(&d.user_name, &suffix)
            || d.upn
                .as_deref()
                .is_some_and(|u| ends_with_ignore_ascii_case(u, &suffix));
        if in_scope {
            unmanaged.push(i);
        }
    }

    drop(by_ext);
    drop(by_name);
    drop(src_ext);

    // Pass 2: move users into items. The source users are taken from the back and their vector
    // is shrunk as it empties, so that it and the rows (at 100,000 users, ~20 MB each) are never
    // both held whole; the rows are put back in source order after. (Pass 1 claims each
    // destination user once, so taking them in reverse changes nothing.)
    let mut dest: Vec<Option<User>> = destination.into_iter().map(Some).collect();
    let rows = decisions
        .iter()
        .filter(|d| !matches!(d, SourceDecision::Unchanged { .. }))
        .count();
    let mut items = Vec::with_capacity(rows + missing.len() + unmanaged.len());
    let (mut source, mut decisions) = (source, decisions);
    let shrink_step = (source.len() / 8).max(1024);
    while let (Some(s), Some(decision)) = (source.pop(), decisions.pop()) {
        if source.capacity() - source.len() >= shrink_step {
            source.shrink_to_fit();
            decisions.shrink_to_fit();
        }
        match decision {
            SourceDecision::Add => items.push(PlanItem::Add {
                source_id: s.source_id,
                upn: s.upn,
                desired: s.desired,
                resource_like: s.resource_like,
            }),
            SourceDecision::Unchanged { .. } => {}
            SourceDecision::Conflict { reason } => items.push(PlanItem::Conflict {
                shown: RowValues::from_source(&s),
                reason,
                resource_like: s.resource_like,
            }),
            SourceDecision::Update {
                dest: i,
                kind,
                mut changes,
                expected,
            } => {
                let Some(current) = dest[i].take() else {
                    items.push(internal_conflict(&s));
                    continue;
                };
                if kind == UpdateKind::Adopt {
                    changes.push(Change {
                        field: Field::ExternalId,
                        old: current.immutable_id.clone().filter(|e| !e.is_empty()),
                        new: Some(s.desired.immutable_id.clone()),
                    });
                }
                items.push(PlanItem::Update(Box::new(UpdateItem {
                    kind,
                    source_id: s.source_id,
                    upn: Some(s.upn),
                    current,
                    desired: s.desired,
                    changes,
                    expected_immutable_id: expected,
                    resource_like: s.resource_like,
                })));
            }
        }
    }
    items.reverse();
    for m in missing {
        match m {
            MissingDecision::Conflict { shown, reason } => items.push(PlanItem::Conflict {
                shown,
                reason,
                resource_like: false,
            }),
            MissingDecision::Delete { dest: i } => {
                if let Some(current) = dest[i].take() {
                    let immutable_id = current.immutable_id.clone().unwrap_or_default();
                    items.push(PlanItem::Delete {
                        current,
                        immutable_id,
                    });
                }
            }
            MissingDecision::Deactivate { dest: i } => {
                if let Some(current) = dest[i].take() {
                    items.push(deactivation(current, ctx.managed));
                }
            }
        }
    }
    for i in unmanaged {
        if let Some(current) = dest[i].take() {
            items.push(PlanItem::Unmanaged { current });
        }
    }
    drop(dest);

    let items = sort_rows(items);
    handed_over.sort_by_cached_key(|h| {
        (
            fold_user_name(&h.user_name).into_owned(),
            h.immutable_id.clone(),
        )
    });

    Plan {
        items,
        unchanged,
        handed_over,
        managed_present,
        managed_gone,
        baseline,
    }
}

/// Preview order: action, then lower-cased userName, then Immutable ID (so that the order never
/// depends on listing order). Sorts borrowed keys — most names are already lower-case and need
/// no copy — then moves the rows into place by swapping, so no second row vector is built (at
/// 100,000 rows that would be the run's peak).
fn sort_rows(mut items: Vec<PlanItem>) -> Vec<PlanItem> {
    let mut order: Vec<usize> = {
        let keys: Vec<(Action, Cow<'_, str>, &str)> = items
            .iter()
            .map(|it| {
                let v = it.view();
                (
                    v.action,
                    fold_user_name(v.user_name),
                    v.immutable_id.unwrap_or_default(),
                )
            })
            .collect();
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_unstable_by(|&a, &b| keys[a].cmp(&keys[b]).then(a.cmp(&b)));
        order
    };
    // Row `k` takes the row now at `order[k]`: follow each cycle of the permutation, marking
    // the places done.
    const DONE: usize = usize::MAX;
    for start in 0..order.len() {
        let mut k = start;
        while order[k] != DONE {
            let from = std::mem::replace(&mut order[k], DONE);
            if from == start {
                break;
            }
            items.swap(k, from);
            k = from;
        }
    }
    items
}

fn internal_conflict(s: &MappedUser) -> PlanItem {
    PlanItem::Conflict {
        shown: RowValues::from_source(s),
        reason: "destination user is matched more than once; not changed".into(),
        resource_like: s.resource_like,
    }
}

/// Removal under `deletionPolicy: Deactivate`: the destination's values with `active: false`.
fn deactivation(current: User, managed: &ManagedSet) -> PlanItem {
    let immutable_id = current.immutable_id.clone().unwrap_or_default();
    let source_id = managed
        .get(&immutable_id)
        .map(|e| e.source_id.clone())
        .unwrap_or_default();
    let desired = DesiredUser {
        user_name: current.user_name.clone(),
        display_name: current.display_name.clone(),
        given_name: current.given_name.clone(),
        surname: current.surname.clone(),
        email: current.email.clone(),
        active: false,
        immutable_id: immutable_id.clone(),
        upn: current.upn.clone(),
    };
    PlanItem::Update(Box::new(UpdateItem {
        kind: UpdateKind::Deactivate,
        source_id,
        upn: current.upn.clone(),
        current,
        desired,
        changes: vec![Change {
            field: Field::Active,
            old: Some("true".into()),
            new: Some("false".into()),
        }],
        expected_immutable_id: Some(immutable_id),
        resource_like: false,
    }))
}

#[allow(clippy::too_many_arguments)]
fn decide_source(
    cfg: &SyncConfig,
    s: &MappedUser,
    dup: Duplicate,
    managed_here: bool,
    destination: &[User],
    by_ext: &HashMap<&str, Hits>,
    by_name: &HashMap<Cow<'_, str>, Hits>,
    slots: &mut [Slot],
    ctx: &PlanContext<'_>,
    is_protected: &dyn Fn(&str) -> bool,
) -> SourceDecision {
    let conflict = |reason: String| SourceDecision::Conflict { reason };
    let imm = s.desired.immutable_id.as_str();
    let name = fold_user_name(&s.desired.user_name);
    let carry_upn = cfg.upn_attribute().is_some();

    match dup {
        Duplicate::ImmutableId => {
            return conflict("more than one source user has this Immutable ID".into());
        }
        Duplicate::UserName => {
            return conflict("more than one source user maps to this userName".into());
        }
        Duplicate::None => {}
    }
    if is_protected(&s.desired.user_name) {
        reference(slots, by_name.get(name.as_ref()));
        return conflict(
            "userName is in protectedUserNames; never adopted, updated or deleted".into(),
        );
    }

    match by_ext.get(imm).copied() {
        Some(Hits::Many(n)) => conflict(format!(
            "{n} destination users carry this externalId; resolve the duplicates by hand"
        )),
        Some(Hits::One(i)) => {
            let current = &destination[i];
            if is_protected(&current.user_name) {
                mark(slots, i, Slot::Referenced);
                return conflict(format!(
                    "destination user {} carries this externalId but is in protectedUserNames",
                    current.user_name
                ));
            }
            if slots[i] == Slot::Claimed {
                return conflict("destination user is matched more than once; not changed".into());
            }
            if !same_user_name(&current.user_name, &s.desired.user_name) {
                match by_name.get(name.as_ref()).copied() {
                    Some(Hits::One(j)) if j != i => {
                        mark(slots, i, Slot::Referenced);
                        return conflict(format!(
                            "cannot rename {} to {}: another destination user has that userName",
                            current.user_name, s.desired.user_name
                        ));
                    }
                    Some(Hits::Many(_)) => {
                        mark(slots, i, Slot::Referenced);
                        return conflict(format!(
                            "cannot rename {} to {}: other destination users have that userName",
                            current.user_name, s.desired.user_name
                        ));
                    }
                    _ => {}
                }
            }
            slots[i] = Slot::Claimed;
            let kind = if managed_here {
                UpdateKind::Sync
            } else if ctx.managed_elsewhere.contains(imm) {
                UpdateKind::TakeOver
            } else {
                UpdateKind::Retake
            };
            let changes = diff(current, &s.desired, carry_upn);
            if changes.is_empty() {
                SourceDecision::Unchanged { dest: i }
            } else {
                SourceDecision::Update {
                    dest: i,
                    kind,
                    changes,
                    expected: Some(imm.to_owned()),
                }
            }
        }
        None => match by_name.get(name.as_ref()).copied() {
            None => SourceDecision::Add,
            Some(Hits::Many(n)) => conflict(format!("{n} destination users have this userName")),
            Some(Hits::One(i)) => {
                let current = &destination[i];
                if slots[i] == Slot::Claimed {
                    return conflict(
                        "destination user with this userName is matched by another source user"
                            .into(),
                    );
                }
                match current.immutable_id.as_deref().filter(|e| !e.is_empty()) {
                    None if cfg.adopt_existing => {
                        slots[i] = Slot::Claimed;
                        let changes = diff(current, &s.desired, carry_upn);
                        SourceDecision::Update {
                            dest: i,
                            kind: UpdateKind::Adopt,
                            changes,
                            expected: None,
                        }
                    }
                    None => {
                        mark(slots, i, Slot::Referenced);
                        conflict(
                            "a destination user with this userName exists without externalId; set adoptExisting: true to take it over"
                                .into(),
                        )
                    }
                    Some(other) => {
                        mark(slots, i, Slot::Referenced);
                        if ctx.managed_elsewhere.contains(other) {
                            conflict(format!(
                                "userName is taken by a user another DirectorySync manages (externalId {other})"
                            ))
                        } else {
                            conflict(format!(
                                "userName is taken by another destination user (externalId {other})"
                            ))
                        }
                    }
                }
            }
        },
    }
}

fn mark(slots: &mut [Slot], i: usize, to: Slot) {
    if slots[i] == Slot::Free {
        slots[i] = to;
    }
}

fn reference(slots: &mut [Slot], hits: Option<&Hits>) {
    if let Some(Hits::One(i)) = hits {
        mark(slots, *i, Slot::Referenced);
    }
}
