//! `GET /v1.0/users`, single user, `$count`, domains (checklist items 3, 4, 6, 9).

mod common;

use common::*;
use entra_emulator::Config;
use serde_json::{Value, json};

const ADV: &[(&str, &str)] = &[("ConsistencyLevel", "eventual")];

fn fixture() -> Value {
    json!({
        "tenantId": "aaaaaaaa-0000-4000-8000-000000000001",
        "domains": [
            {"id": "contoso.example", "authenticationType": "Managed", "isDefault": true},
            {"id": "fed.contoso.example", "authenticationType": "Federated"}
        ],
        "applications": [{"clientId": "app", "clientSecret": "s"}],
        "users": {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users", "value": [
            {"id": "00000000-0000-4000-8000-000000000001", "userPrincipalName": "alice@contoso.example",
             "displayName": "Alice Smith", "givenName": "Alice", "surname": "Smith", "mail": "alice@contoso.example",
             "accountEnabled": true, "jobTitle": "Engineer", "businessPhones": ["+1 555 0100"], "department": "R&D",
             "userType": "Member", "city": "Seattle"},
            {"id": "00000000-0000-4000-8000-000000000002", "userPrincipalName": "bob@fed.contoso.example",
             "displayName": "Bob Jones", "accountEnabled": false, "onPremisesImmutableId": "RDHiRneDPkiofrZ2nbYu7Q==",
             "userType": "Member"},
            {"id": "00000000-0000-4000-8000-000000000003", "userPrincipalName": "carol_partner.example#EXT#@contoso.onmicrosoft.com",
             "displayName": "Carol", "mail": "carol@partner.example", "userType": "Guest", "accountEnabled": true},
            {"userPrincipalName": "山田.太郎@contoso.example", "displayName": "山田 太郎", "givenName": "太郎", "surname": "山田",
             "proxyAddresses": ["SMTP:taro@contoso.example"], "accountEnabled": true, "userType": "Member"}
        ]}
    })
}

async fn fixture_emu() -> (Emu, String) {
    let e = Emu::start(Config::from_fixture(&fixture()).unwrap().https()).await;
    let t = e.token_for("app", "s").await;
    (e, t)
}

#[tokio::test]
async fn default_property_set_and_select() {
    let (e, t) = fixture_emu().await;
    let v = e.get_json("/v1.0/users", &t, &[], 200).await;
    assert_eq!(
        v["@odata.context"],
        format!("{}/v1.0/$metadata#users", e.emu.base_url)
    );
    let alice = &v["value"][0];
    let keys: Vec<&str> = alice
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
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
            "id"
        ]
    );
    assert_eq!(alice["mobilePhone"], Value::Null);
    assert_eq!(alice["businessPhones"], json!(["+1 555 0100"]));
    assert_eq!(v["value"][1]["businessPhones"], json!([]));
    assert!(alice.get("accountEnabled").is_none());

    let v = e
        .get_json(
            "/v1.0/users?$select=id,accountEnabled,onPremisesImmutableId,city,department",
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(
        v["@odata.context"],
        format!(
            "{}/v1.0/$metadata#users(id,accountEnabled,onPremisesImmutableId,city,department)",
            e.emu.base_url
        )
    );
    assert_eq!(
        v["value"][0],
        json!({"id":"00000000-0000-4000-8000-000000000001","accountEnabled":true,"onPremisesImmutableId":null,"city":"Seattle","department":"R&D"})
    );
    assert_eq!(
        v["value"][1]["onPremisesImmutableId"],
        "RDHiRneDPkiofrZ2nbYu7Q=="
    );
    assert!(v["value"][1].get("displayName").is_none());

    // Unknown property, and one that only single-user GET returns.
    let v = e
        .get_json("/v1.0/users?$select=displayName,bogus", &t, &[], 400)
        .await;
    assert_graph_error(&v, "BadRequest");
    assert_eq!(
        v["error"]["message"],
        "Could not find a property named 'bogus' on type 'microsoft.graph.user'."
    );
    let v = e
        .get_json("/v1.0/users?$select=aboutMe", &t, &[], 501)
        .await;
    assert_graph_error(&v, "NotImplemented");
    e.stop().await;
}

#[tokio::test]
async fn paging_top_nextlink_skiptoken() {
    let e = Emu::generated(250).await;
    let t = e.token().await;
    // Default page is 100.
    let v = e.get_json("/v1.0/users", &t, &[], 200).await;
    assert_eq!(v["value"].as_array().unwrap().len(), 100);
    // $top bounds with Graph's exact text.
    for bad in ["1000", "0", "-1", "abc"] {
        let v = e
            .get_json(&format!("/v1.0/users?$top={bad}"), &t, &[], 400)
            .await;
        assert_graph_error(&v, "Request_UnsupportedQuery");
        assert_eq!(
            v["error"]["message"],
            format!("Invalid page size specified: '{bad}'. Must be between 1 and 999 inclusive.")
        );
    }
    let v = e.get_json("/v1.0/users?$top=999", &t, &[], 200).await;
    assert_eq!(v["value"].as_array().unwrap().len(), 250);
    assert!(v.get("@odata.nextLink").is_none());
    // $skip is rejected.
    let v = e.get_json("/v1.0/users?$skip=10", &t, &[], 400).await;
    assert_graph_error(&v, "Request_BadRequest");
    assert_eq!(
        v["error"]["message"],
        "'$skip' is not supported by the service."
    );
    // nextLink: absolute, from our own base URL, carrying every option plus an opaque $skiptoken.
    let first = "/v1.0/users?$top=60&$select=id,displayName&%24count=true";
    let mut v = e.get_json(first, &t, &[], 200).await;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        for u in v["value"].as_array().unwrap() {
            assert_eq!(u.as_object().unwrap().len(), 2);
            seen.push(u["id"].as_str().unwrap().to_string());
        }
        assert!(
            v.get("@odata.count").is_none(),
            "no header: $count=true is ignored"
        );
        let Some(next) = v["@odata.nextLink"].as_str() else {
            break;
        };
        assert!(
            next.starts_with(&format!(
                "{}/v1.0/users?$top=60&$select=id,displayName&%24count=true&$skiptoken=",
                e.emu.base_url
            )),
            "{next}"
        );
        v = e.get_json(next, &t, &[], 200).await;
    }
    assert_eq!(pages, 5);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 250);
    // A damaged skiptoken is refused.
    let v = e
        .get_json("/v1.0/users?$skiptoken=garbage", &t, &[], 400)
        .await;
    assert_graph_error(&v, "Directory_ExpiredPageToken");
    e.stop().await;
}

#[tokio::test]
async fn endswith_needs_advanced_query_and_count_on_first_page() {
    let e = Emu::generated(300).await;
    let t = e.token().await;
    let f = "$filter=endswith(userPrincipalName,'@example.com')";
    let msg = "Operator 'endsWith' is not supported because the required parameters might be missing. Try adding $count=true query parameter and ConsistencyLevel:eventual header. Refer to https://aka.ms/graph-docs/advanced-queries for more information";
    for (q, h) in [
        (format!("/v1.0/users?{f}"), &[][..]),
        (format!("/v1.0/users?{f}&$count=true"), &[][..]),
        (format!("/v1.0/users?{f}"), ADV),
    ] {
        let v = e.get_json(&q, &t, h, 400).await;
        assert_graph_error(&v, "Request_UnsupportedQuery");
        assert_eq!(v["error"]["message"], msg);
    }
    let q = format!("/v1.0/users?{f}&$count=true&$top=100&$select=id,userPrincipalName,userType");
    let v = e.get_json(&q, &t, ADV, 200).await;
    let count = v["@odata.count"].as_u64().unwrap();
    let mut total = v["value"].as_array().unwrap().len();
    assert!(v["value"].as_array().unwrap().iter().all(|u| {
        u["userPrincipalName"]
            .as_str()
            .unwrap()
            .ends_with("@example.com")
    }));
    let mut next = v["@odata.nextLink"].as_str().map(str::to_string);
    while let Some(n) = next {
        // ConsistencyLevel is not carried in the link: the client resends it.
        let v = e.get_json(&n, &t, ADV, 200).await;
        assert!(v.get("@odata.count").is_none());
        total += v["value"].as_array().unwrap().len();
        next = v["@odata.nextLink"].as_str().map(str::to_string);
    }
    assert_eq!(total as u64, count);
    // Guests and onmicrosoft accounts are not in the domain.
    let shares = entra_emulator::Shares::for_count(300);
    assert_eq!(count as usize, 300 - shares.guests - shares.initial_domain);
    e.stop().await;
}

#[tokio::test]
async fn filters() {
    let (e, t) = fixture_emu().await;
    let ids = |v: &Value| -> Vec<String> {
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["displayName"].as_str().unwrap().to_string())
            .collect()
    };
    let q = |f: &str| format!("/v1.0/users?$filter={}", urlencode(f));
    let v = e
        .get_json(
            &q("userPrincipalName eq 'ALICE@contoso.example'"),
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(ids(&v), ["Alice Smith"]);
    let v = e
        .get_json(
            &q("startswith(displayName,'b') or userType eq 'Guest'"),
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(ids(&v), ["Bob Jones", "Carol"]);
    let v = e
        .get_json(
            &q("accountEnabled eq true and userType in ('Member')"),
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(ids(&v), ["Alice Smith", "山田 太郎"]);
    let v = e
        .get_json(&q("startswith(displayName,'山田')"), &t, &[], 200)
        .await;
    assert_eq!(ids(&v), ["山田 太郎"]);
    let v = e
        .get_json(
            &q("proxyAddresses/any(p:startswith(p,'SMTP:taro'))"),
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(ids(&v), ["山田 太郎"]);
    // Advanced-only constructs.
    let v = e.get_json(&q("userType ne 'Guest'"), &t, &[], 400).await;
    assert_graph_error(&v, "Request_UnsupportedQuery");
    let v = e
        .get_json(
            &q("onPremisesImmutableId eq 'RDHiRneDPkiofrZ2nbYu7Q=='"),
            &t,
            &[],
            400,
        )
        .await;
    assert_graph_error(&v, "Request_UnsupportedQuery");
    let v = e
        .get_json(
            &format!(
                "{}&$count=true",
                q("onPremisesImmutableId eq 'RDHiRneDPkiofrZ2nbYu7Q=='")
            ),
            &t,
            ADV,
            200,
        )
        .await;
    assert_eq!(ids(&v), ["Bob Jones"]);
    assert_eq!(v["@odata.count"], 1);
    // Guest UPNs with #EXT# (URL-encoded as %23).
    let v = e
        .get_json(
            &format!(
                "{}&$count=true",
                q("endswith(userPrincipalName,'#EXT#@contoso.onmicrosoft.com')")
            ),
            &t,
            ADV,
            200,
        )
        .await;
    assert_eq!(ids(&v), ["Carol"]);
    // Malformed and unknown.
    let v = e.get_json(&q("displayName eq"), &t, &[], 400).await;
    assert_graph_error(&v, "BadRequest");
    assert_eq!(
        v["error"]["message"],
        "Invalid filter clause: Syntax error at position 14 in 'displayName eq'."
    );
    let v = e.get_json(&q("displayName eq 'x"), &t, &[], 400).await;
    assert_graph_error(&v, "BadRequest");
    let v = e.get_json(&q("nosuch eq 'x'"), &t, &[], 400).await;
    assert_eq!(
        v["error"]["message"],
        "Could not find a property named 'nosuch' on type 'microsoft.graph.user'."
    );
    let v = e
        .get_json(&q("accountEnabled eq 'true'"), &t, &[], 400)
        .await;
    assert_graph_error(&v, "BadRequest");
    let v = e.get_json(&q("city eq 'Seattle'"), &t, &[], 400).await;
    assert_graph_error(&v, "Request_UnsupportedQuery");
    assert_eq!(
        v["error"]["message"],
        "Unsupported or invalid query filter clause specified for property 'city' of resource 'User'."
    );
    e.stop().await;
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn single_user_count_segment_orderby_search() {
    let (e, t) = fixture_emu().await;
    let v = e
        .get_json("/v1.0/users/alice@contoso.example", &t, &[], 200)
        .await;
    assert_eq!(
        v["@odata.context"],
        format!("{}/v1.0/$metadata#users/$entity", e.emu.base_url)
    );
    assert_eq!(v["id"], "00000000-0000-4000-8000-000000000001");
    let v = e
        .get_json(
            "/v1.0/users/00000000-0000-4000-8000-000000000002?$select=accountEnabled,aboutMe",
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(v["accountEnabled"], false);
    assert_eq!(v["aboutMe"], Value::Null);
    let v = e
        .get_json(
            "/v1.0/users/carol_partner.example%23EXT%23@contoso.onmicrosoft.com",
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(v["displayName"], "Carol");
    let v = e
        .get_json(
            "/v1.0/users('alice@contoso.example')?$select=id",
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(v["id"], "00000000-0000-4000-8000-000000000001");
    let r = e
        .get(
            "/v1.0/users/nobody@contoso.example",
            &t,
            &[("client-request-id", "cid-1")],
        )
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["client-request-id"], "cid-1");
    assert!(r.headers().contains_key("request-id"));
    let v: Value = r.json().await.unwrap();
    assert_graph_error(&v, "Request_ResourceNotFound");
    assert_eq!(
        v["error"]["message"],
        "Resource 'nobody@contoso.example' does not exist or one of its queried reference-property objects are not present."
    );
    assert_eq!(v["error"]["innerError"]["client-request-id"], "cid-1");
    // /users/$count
    let v = e.get_json("/v1.0/users/$count", &t, &[], 400).await;
    assert_graph_error(&v, "Request_BadRequest");
    let r = e.get("/v1.0/users/$count", &t, ADV).await;
    assert_eq!(r.text().await.unwrap(), "4");
    // $orderby and $search.
    let v = e
        .get_json(
            "/v1.0/users?$orderby=displayName desc&$select=displayName",
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(v["value"][0]["displayName"], "山田 太郎");
    let v = e
        .get_json("/v1.0/users?$search=\"displayName:smi\"", &t, &[], 400)
        .await;
    assert_graph_error(&v, "Request_UnsupportedQuery");
    let v = e
        .get_json("/v1.0/users?$search=\"displayName:smi\"", &t, ADV, 200)
        .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    // Other paths.
    let v = e.get_json("/v1.0/me", &t, &[], 400).await;
    assert_graph_error(&v, "BadRequest");
    let v = e.get_json("/v1.0/groupz", &t, &[], 400).await;
    assert_eq!(
        v["error"]["message"],
        "Resource not found for the segment 'groupz'."
    );
    let v = e.get_json("/v1.0/users?$top=1&$top=2", &t, &[], 400).await;
    assert_graph_error(&v, "BadRequest");
    e.stop().await;
}

#[tokio::test]
async fn domains_and_organization() {
    let (e, t) = fixture_emu().await;
    let v = e.get_json("/v1.0/domains", &t, &[], 200).await;
    let d = v["value"].as_array().unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d[0]["id"], "contoso.example");
    assert_eq!(d[0]["authenticationType"], "Managed");
    assert_eq!(d[0]["isDefault"], true);
    assert_eq!(d[1]["authenticationType"], "Federated");
    assert_eq!(d[2]["id"], "contoso.onmicrosoft.com");
    assert_eq!(d[2]["isInitial"], true);
    for k in [
        "availabilityStatus",
        "isAdminManaged",
        "isRoot",
        "isVerified",
        "supportedServices",
    ] {
        assert!(d[0].get(k).is_some(), "{k}");
    }
    let v = e
        .get_json("/v1.0/domains/fed.contoso.example", &t, &[], 200)
        .await;
    assert_eq!(v["authenticationType"], "Federated");
    let v = e.get_json("/v1.0/domains/nope.example", &t, &[], 404).await;
    assert_graph_error(&v, "Request_ResourceNotFound");
    let v = e.get_json("/v1.0/organization", &t, &[], 200).await;
    assert_eq!(v["value"][0]["id"], "aaaaaaaa-0000-4000-8000-000000000001");
    // Generated tenants have the domain and an initial onmicrosoft.com domain.
    let g = Emu::generated(5).await;
    let gt = g.token().await;
    let v = g.get_json("/v1.0/domains", &gt, &[], 200).await;
    let ids: Vec<&str> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["example.com", "example.onmicrosoft.com"]);
    g.stop().await;
    e.stop().await;
}

#[tokio::test]
async fn plain_http_option() {
    let e = Emu::start(Config::generated(3, "example.com", 1)).await;
    assert!(e.emu.base_url.starts_with("http://127.0.0.1:"));
    assert!(e.emu.ca_pem.is_none());
    let t = e.token().await;
    let v = e.get_json("/v1.0/users?$top=2", &t, &[], 200).await;
    assert!(
        v["@odata.nextLink"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    e.stop().await;
}
