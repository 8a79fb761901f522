//! The plan (docs/behaviour.md §2.4–2.5): what a run would do to the destination, as preview
//! rows — this file holds the rows and what they show; [`matching`] makes them.
//!
//! Pure and deterministic: the same inputs give the same plan, in the same order, whatever
//! order the directories listed their users in. Planning works in two passes so that 100k
//! users cost two hash maps and no copies: the first pass decides with borrowed data and
//! indexes, the second moves each source and destination user into the one plan item that
//! needs it.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::directory::{DesiredUser, User};
use crate::sync::managed::ManagedSet;
use crate::sync::mapping::MappedUser;

/// A preview row's action, in the order the preview lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    Add,
    /// A soft-deleted destination user brought back (then updated) instead of a second account
    /// (docs/behaviour.md §6): sorts after Add.
    Restore,
    Update,
    Delete,
    Conflict,
    Unmanaged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Add => "Add",
            Action::Restore => "Restore",
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
            user_name: s.shown_user_name.as_ref().unwrap_or(&d.user_name).clone(),
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
        /// Shown in the userName column instead of `desired.user_name` ([`MappedUser::shown_user_name`]).
        shown_user_name: Option<String>,
    },
    /// Restore `deleted` from the destination's deleted items (the same object, with its
    /// mailbox and memberships), then bring it to `desired`: an Add whose Immutable ID a
    /// soft-deleted user carries. Boxed like Update.
    Restore(Box<RestoreItem>),
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

/// A Restore row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreItem {
    pub source_id: String,
    /// Shown in the preview's userPrincipalName column.
    pub upn: String,
    pub shown_user_name: Option<String>,
    /// The soft-deleted user, as deleted items list it (its UPN without Graph's id prefix).
    pub deleted: User,
    pub desired: DesiredUser,
    /// What the update after the restore changes.
    pub changes: Vec<Change>,
}

/// An Update row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateItem {
    pub kind: UpdateKind,
    pub source_id: String,
    /// Shown in the preview's userPrincipalName column.
    pub upn: Option<String>,
    /// Shown in the userName column instead of `desired.user_name` ([`MappedUser::shown_user_name`]).
    pub shown_user_name: Option<String>,
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
            PlanItem::Restore(_) => Action::Restore,
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
            PlanItem::Add {
                upn,
                desired,
                shown_user_name,
                ..
            } => desired_view(action, desired, Some(upn), shown_user_name.as_deref()),
            PlanItem::Restore(r) => desired_view(
                action,
                &r.desired,
                Some(&r.upn),
                r.shown_user_name.as_deref(),
            ),
            PlanItem::Update(u) => desired_view(
                action,
                &u.desired,
                u.upn.as_deref(),
                u.shown_user_name.as_deref(),
            ),
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
            PlanItem::Add { .. }
                | PlanItem::Restore(_)
                | PlanItem::Update(_)
                | PlanItem::Delete { .. }
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
            PlanItem::Add {
                resource_like,
                shown_user_name,
                ..
            } => {
                if *resource_like {
                    push(&RESOURCE_LIKE_WARNING);
                }
                // Only rows written into Entra ID show a source userName (mapping.rs).
                push(if shown_user_name.is_some() {
                    &RANDOM_PASSWORD_NOTE
                } else {
                    &INITIAL_PASSWORD_NOTE
                });
            }
            PlanItem::Restore(r) => {
                push(&format_args!("{RESTORE_NOTE} {}", r.deleted.id));
                for c in &r.changes {
                    push(c);
                }
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
/// `changes` text for every Add into Entra ID: created with a random password nobody sees;
/// sign-in goes through the federated service (docs/behaviour.md §6).
pub const RANDOM_PASSWORD_NOTE: &str = "note: random password, never shown";
/// `changes` text of a Restore row, followed by the deleted user's object id.
pub const RESTORE_NOTE: &str = "restore soft-deleted user";
/// `changes` text for a user handed over from another resource sharing the destination.
pub const TAKE_OVER_NOTE: &str = "note: handed over from another DirectorySync";

fn desired_view<'a>(
    action: Action,
    d: &'a DesiredUser,
    upn: Option<&'a str>,
    shown_user_name: Option<&'a str>,
) -> RowView<'a> {
    RowView {
        action,
        user_name: shown_user_name.unwrap_or(&d.user_name),
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
    /// Source ids of users left in Conflict only because the destination user holding their
    /// userName is deleted or renamed by this very plan: the next run settles them, so an
    /// incremental next run reads them again although they did not change (docs/behaviour.md §7).
    pub retry_source_ids: Vec<String>,
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

/// The items a destination carries beyond the ones every direction writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Carry {
    /// The UPN attribute of a SCIM destination, when one is configured.
    pub upn: bool,
    /// `email`: a SCIM destination's; Entra ID's `mail` is not written (docs/behaviour.md §6).
    pub email: bool,
}

impl Carry {
    pub fn of(cfg: &crate::sync::config::SyncConfig) -> Self {
        let forward = cfg.direction == crate::sync::config::Direction::EntraIdToScim;
        Self {
            upn: forward && cfg.upn_attribute().is_some(),
            email: forward,
        }
    }
}

/// The fields an update of `current` to `desired` changes. `userName` is compared
/// case-insensitively (a SCIM server may store it in another case; a case-only rename would
/// otherwise be sent on every run); the other items exactly, with an empty string the same as
/// absent. The UPN attribute is compared only when it is carried.
pub fn diff(current: &User, desired: &DesiredUser, carry: Carry) -> Vec<Change> {
    let mut changes = Vec::new();
    if !same_user_name(&current.user_name, &desired.user_name) {
        changes.push(Change {
            field: Field::UserName,
            old: Some(current.user_name.clone()),
            new: Some(desired.user_name.clone()),
        });
    }
    if carry.upn {
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
    if carry.email {
        opt_change(&mut changes, Field::Email, &current.email, &desired.email);
    }
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

mod matching;
mod restore;

pub use matching::plan;
pub use restore::plan_restores;
