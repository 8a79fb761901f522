//! The preview's files: the CSV's exact bytes and summary.json.

use super::*;

#[test]
fn csv_exact_bytes() {
    let mut yamada = entra_user(1, "yamada@example.com");
    yamada.display_name = Some("山田 太郎".into());
    yamada.given_name = Some("太郎".into());
    yamada.surname = Some("山田".into());
    yamada.immutable_id = Some("+abc==".into());

    let mut comma = entra_user(2, "comma@example.com");
    comma.display_name = Some("Doe, \"Jo\"".into());
    comma.given_name = Some("Jo".into());
    comma.surname = Some("Doe".into());
    comma.email = None;

    let mut evil = entra_user(3, "evil@example.com");
    evil.display_name = Some("=cmd()".into());
    evil.given_name = Some("line1\nline2".into());
    evil.surname = Some("-x".into());
    let mut evil_twin = scim_twin("d3", &evil);
    evil_twin.display_name = Some("Old".into());

    let mut room = entra_user(4, "room@example.com");
    room.display_name = Some("Room 1".into());
    room.given_name = None;
    room.surname = None;
    room.active = false;

    let gone = entra_user(5, "gone@example.com");
    let taken = entra_user(6, "taken@example.com");

    let managed = managed_of(&[(3, "d3", "evil@example.com"), (5, "d5", "gone@example.com")]);
    let dest = vec![
        evil_twin,
        scim_twin("d5", &gone),
        hand_made("h1", "taken@example.com"),
        hand_made("h2", "admin@example.com"),
    ];
    let p = plan_simple(
        &cfg(),
        vec![yamada, comma, evil, room, taken],
        dest,
        &managed,
    );

    let mut out = Vec::new();
    let stats = write_preview_csv(&p, &mut out).expect("writes");
    let (id2, id3, id4, id5, id6) = (
        immutable_id_of(2),
        immutable_id_of(3),
        immutable_id_of(4),
        immutable_id_of(5),
        immutable_id_of(6),
    );
    let expected = format!(
        "\u{feff}action,userName,userPrincipalName,displayName,givenName,surname,email,active,changes,immutableId\r\n\
         Add,comma@example.com,comma@example.com,\"Doe, \"\"Jo\"\"\",Jo,Doe,,true,note: initial password required,{id2}\r\n\
         Add,room@example.com,room@example.com,Room 1,,,room@example.com,false,warning: resource-like account; note: initial password required,{id4}\r\n\
         Add,yamada@example.com,yamada@example.com,山田 太郎,太郎,山田,yamada@example.com,true,note: initial password required,'+abc==\r\n\
         Update,evil@example.com,evil@example.com,'=cmd(),\"line1\nline2\",'-x,evil@example.com,true,displayName: Old -> =cmd(),{id3}\r\n\
         Delete,gone@example.com,,gone display,gone given,gone surname,gone@example.com,true,,{id5}\r\n\
         Conflict,taken@example.com,taken@example.com,taken display,taken given,taken surname,taken@example.com,true,a destination user with this userName exists without externalId; set adoptExisting: true to take it over,{id6}\r\n\
         Unmanaged,admin@example.com,,admin@example.com (hand-made),,,,true,,\r\n"
    );
    assert_eq!(String::from_utf8(out.clone()).expect("utf-8"), expected);
    assert!(out.starts_with(b"\xEF\xBB\xBF"));
    assert_eq!(stats.rows, 7);
    assert_eq!(stats.bytes, out.len() as u64);
    use sha2::Digest as _;
    assert_eq!(
        stats.sha256,
        crate::sync::csv::hex(&sha2::Sha256::digest(&out))
    );
}

#[test]
fn csv_of_an_empty_plan_is_bom_and_header() {
    let mut out = Vec::new();
    let stats = write_preview_csv(&Plan::default(), &mut out).expect("writes");
    assert_eq!(
        out,
        b"\xEF\xBB\xBFaction,userName,userPrincipalName,displayName,givenName,surname,email,active,changes,immutableId\r\n"
    );
    assert_eq!(stats.rows, 0);
    // sha256 of exactly those bytes.
    assert_eq!(stats.sha256.len(), 64);
}

#[test]
fn every_formula_lead_character_is_neutralised() {
    use crate::sync::csv::neutralise;
    for cell in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
        assert_eq!(neutralise(cell), format!("'{cell}"));
    }
    for cell in ["", "a=b", "'x", " =x", "山田"] {
        assert_eq!(neutralise(cell), cell);
    }
}

#[test]
fn summary_json_is_camel_case_with_counts_and_verdict() {
    let (source, dest, managed) = managed_population(3);
    let p = plan_simple(&cfg(), source[1..].to_vec(), dest, &managed);
    let guard = crate::sync::guard::evaluate(&p, 10);
    let s = crate::sync::summary::Summary::new(DOMAIN, &p, Default::default(), &guard, true, false);
    let json: serde_json::Value = serde_json::from_str(&s.to_json()).expect("json");
    assert_eq!(json["counts"]["delete"], 1);
    assert_eq!(json["counts"]["unchanged"], 2);
    assert_eq!(json["counts"]["handedOver"], 0);
    assert_eq!(json["guard"]["tripped"], true);
    assert_eq!(json["dryRun"], true);
    assert!(
        json["guardMessage"]
            .as_str()
            .is_some_and(|m| m.starts_with("Applying this plan would be canceled"))
    );
}
