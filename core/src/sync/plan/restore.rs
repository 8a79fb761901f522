//! Restore rows (docs/behaviour.md §6): an Add whose Immutable ID a soft-deleted destination
//! user carries brings that user back instead of creating a second account, which would lose
//! the mailbox, licences and group memberships kept with the deleted one.

use std::collections::HashMap;

use super::*;

/// Turns the Adds of `plan` whose Immutable ID one soft-deleted user of `deleted` carries into
/// Restore rows (with the changes the update after the restore makes), and those that several
/// carry into Conflict rows (which one to bring back is a person's call). Other rows stay.
pub fn plan_restores(plan: &mut Plan, deleted: Vec<User>, carry: Carry) {
    if deleted.is_empty() || plan.count(Action::Add) == 0 {
        return;
    }
    let mut by_imm: HashMap<String, Vec<User>> = HashMap::new();
    for u in deleted {
        if let Some(imm) = u.immutable_id.clone().filter(|i| !i.is_empty()) {
            by_imm.entry(imm).or_default().push(u);
        }
    }
    let mut changed = false;
    for item in &mut plan.items {
        let PlanItem::Add { desired, .. } = item else {
            continue;
        };
        let Some(found) = by_imm.get_mut(desired.immutable_id.as_str()) else {
            continue;
        };
        changed = true;
        let PlanItem::Add {
            source_id,
            upn,
            desired,
            resource_like,
            shown_user_name,
        } = std::mem::replace(
            item,
            PlanItem::Unmanaged {
                current: User::default(),
            },
        )
        else {
            unreachable!("matched as an Add above");
        };
        *item = if found.len() == 1 {
            let deleted = found.pop().expect("one");
            let changes = diff(&deleted, &desired, carry);
            PlanItem::Restore(Box::new(RestoreItem {
                source_id,
                upn,
                shown_user_name,
                deleted,
                desired,
                changes,
            }))
        } else {
            let shown = RowValues {
                user_name: shown_user_name.unwrap_or_else(|| desired.user_name.clone()),
                upn: Some(upn),
                display_name: desired.display_name,
                given_name: desired.given_name,
                surname: desired.surname,
                email: desired.email,
                active: desired.active,
                immutable_id: Some(desired.immutable_id),
            };
            PlanItem::Conflict {
                shown,
                reason: format!(
                    "{} soft-deleted users carry this Immutable ID; restore one by hand",
                    found.len()
                ),
                resource_like,
            }
        };
    }
    if changed {
        plan.items = matching::sort_rows(std::mem::take(&mut plan.items));
    }
}
