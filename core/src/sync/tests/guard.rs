//! The deletion guard on real plans.

use super::*;

#[test]
fn guard_at_sixty_five_percent_on_real_plans() {
    for (removed, tripped) in [(64usize, false), (65, true), (66, true)] {
        let (source, dest, managed) = managed_population(100);
        let p = plan_simple(&cfg(), source[removed..].to_vec(), dest, &managed);
        let v = crate::sync::guard::evaluate(&p, 65);
        assert_eq!(
            (v.deletes, v.managed, v.tripped),
            (removed, 100, tripped),
            "{removed} removed"
        );
    }
}

#[test]
fn guard_counts_deactivations_under_deactivate() {
    let mut c = cfg();
    c.deletion_policy = DeletionPolicy::Deactivate;
    let (source, dest, managed) = managed_population(10);
    let p = plan_simple(&c, source[7..].to_vec(), dest, &managed);
    let v = crate::sync::guard::evaluate(&p, 65);
    assert_eq!(p.count(Action::Update), 7);
    assert_eq!(p.count(Action::Delete), 0);
    assert_eq!((v.deletes, v.managed, v.tripped), (7, 10, true));
}

#[test]
fn an_empty_source_read_counts_as_deleting_everyone_and_trips_even_at_100() {
    let (_, dest, managed) = managed_population(5);
    let p = plan_simple(&cfg(), vec![], dest, &managed);
    assert_eq!(p.count(Action::Delete), 5);
    for max in [0, 65, 100] {
        assert!(crate::sync::guard::evaluate(&p, max).tripped, "max {max}");
    }
}

#[test]
fn zero_and_hundred_on_real_plans() {
    let (source, dest, managed) = managed_population(4);
    let p = plan_simple(&cfg(), source[1..].to_vec(), dest.clone(), &managed);
    assert!(crate::sync::guard::evaluate(&p, 0).tripped);
    assert!(!crate::sync::guard::evaluate(&p, 100).tripped);
    let p = plan_simple(&cfg(), source.clone(), dest, &managed);
    assert!(
        !crate::sync::guard::evaluate(&p, 0).tripped,
        "nothing deleted"
    );
}
