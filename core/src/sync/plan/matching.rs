//! Matching source users with destination users (docs/behaviour.md §2.4–2.5), in two passes:
//! the first decides with borrowed data and indexes, the second moves each user into the one
//! row that needs it.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::*;
use crate::directory::User;
use crate::sync::config::{DeletionPolicy, Direction, SyncConfig, ends_with_ignore_ascii_case};
use crate::sync::managed::{ManagedEntry, ManagedSet};
use crate::sync::mapping::MappedUser;

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

    // Writing into Entra ID, a source user's Immutable ID may change (it is the SCIM
    // externalId), but Entra ID keeps the one a user was created with: such a user is found by
    // its recorded source id and is a Conflict, never a Delete of the old and an Add of the new
    // (docs/behaviour.md §6). Entra object ids never change, so the forward direction needs
    // none of this.
    let renumbered: Option<HashMap<&str, &str>> =
        (cfg.direction == Direction::ScimToEntraId).then(|| {
            ctx.managed
                .iter()
                .map(|(imm, e)| (e.source_id.as_str(), imm))
                .collect()
        });
    let source_ids: Option<HashSet<&str>> = renumbered
        .as_ref()
        .map(|_| source.iter().map(|s| s.source_id.as_str()).collect());

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
            renumbered.as_ref(),
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
        if source_ids
            .as_ref()
            .is_some_and(|ids| ids.contains(entry.source_id.as_str()))
        {
            if let Some(Hits::One(i)) = hits {
                slots[i] = Slot::Claimed;
            }
            missing.push(MissingDecision::Conflict {
                shown: RowValues {
                    user_name: entry.user_name.clone(),
                    immutable_id: Some(imm.to_owned()),
                    ..RowValues::default()
                },
                reason: "its source user now gives another Immutable ID; not removed".into(),
            });
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

    // userNames this plan frees: deleted users, and users renamed away from their name.
    let mut freed: HashSet<Cow<'_, str>> = HashSet::new();
    for m in &missing {
        if let MissingDecision::Delete { dest: i } = m {
            freed.insert(fold_user_name(&destination[*i].user_name));
        }
    }
    for (s, d) in source.iter().zip(&decisions) {
        if let SourceDecision::Update { dest: i, .. } = d
            && !same_user_name(&destination[*i].user_name, &s.desired.user_name)
        {
            freed.insert(fold_user_name(&destination[*i].user_name));
        }
    }
    let mut retry_source_ids: Vec<String> = source
        .iter()
        .zip(&decisions)
        .filter(|(s, d)| {
            matches!(d, SourceDecision::Conflict { .. })
                && freed.contains(fold_user_name(&s.desired.user_name).as_ref())
        })
        .map(|(s, _)| s.source_id.clone())
        .collect();
    retry_source_ids.sort();
    drop(freed);

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
                shown_user_name: s.shown_user_name,
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
                    shown_user_name: s.shown_user_name,
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
        retry_source_ids,
    }
}

/// Preview order: action, then lower-cased userName, then Immutable ID (so that the order never
/// depends on listing order). Sorts borrowed keys — most names are already lower-case and need
/// no copy — then moves the rows into place by swapping, so no second row vector is built (at
/// 100,000 rows that would be the run's peak).
pub(super) fn sort_rows(mut items: Vec<PlanItem>) -> Vec<PlanItem> {
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
        shown_user_name: None,
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
    renumbered: Option<&HashMap<&str, &str>>,
) -> SourceDecision {
    let conflict = |reason: String| SourceDecision::Conflict { reason };
    let imm = s.desired.immutable_id.as_str();
    let name = fold_user_name(&s.desired.user_name);
    let carry = Carry::of(cfg);

    match dup {
        Duplicate::ImmutableId => {
            return conflict("more than one source user has this Immutable ID".into());
        }
        Duplicate::UserName => {
            return conflict("more than one source user maps to this userName".into());
        }
        Duplicate::None => {}
    }
    if let Some(why) = &s.invalid {
        reference(slots, by_name.get(name.as_ref()));
        return conflict(format!("{why}; not written"));
    }
    if let Some(old) = renumbered.and_then(|m| m.get(s.source_id.as_str()).copied())
        && old != imm
    {
        return conflict(format!(
            "the source now gives Immutable ID {imm}, but this user was created with {old}; \
             Entra ID keeps the first (a federated sign-in depends on it): not changed"
        ));
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
            if current.guest {
                mark(slots, i, Slot::Referenced);
                return conflict(GUEST_CONFLICT.into());
            }
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
            let changes = diff(current, &s.desired, carry);
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
                if current.guest {
                    mark(slots, i, Slot::Referenced);
                    return conflict(GUEST_CONFLICT.into());
                }
                match current.immutable_id.as_deref().filter(|e| !e.is_empty()) {
                    None if cfg.adopt_existing => {
                        slots[i] = Slot::Claimed;
                        let changes = diff(current, &s.desired, carry);
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

/// Why a guest of the destination (Entra ID) is never adopted or written.
const GUEST_CONFLICT: &str =
    "the destination user with this userPrincipalName is a guest; guests are never changed";

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
