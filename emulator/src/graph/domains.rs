//! `GET /v1.0/domains`, `/domains/{id}` and `/organization`.

use http::StatusCode;
use serde_json::{Value, json};

use super::GraphReq;
use crate::http::{GRAPH_JSON, Resp, response};

const DOMAIN_ROLES: &[&str] = &[
    "Domain.Read.All",
    "Domain.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

fn ok(v: &Value) -> Resp {
    response(
        StatusCode::OK,
        GRAPH_JSON,
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

pub fn list(g: &GraphReq) -> Resp {
    if !g.has_role(DOMAIN_ROLES) {
        return g.forbidden();
    }
    ok(&json!({
        "@odata.context": format!("{}/v1.0/$metadata#domains", g.ctx.base_url),
        "value": g.tenant.domains,
    }))
}

pub fn get(g: &GraphReq, raw_id: &str) -> Resp {
    if !g.has_role(DOMAIN_ROLES) {
        return g.forbidden();
    }
    let id = percent_encoding::percent_decode_str(raw_id).decode_utf8_lossy();
    let found = g.tenant.domains.iter().find(|d| {
        d["id"]
            .as_str()
            .is_some_and(|x| x.eq_ignore_ascii_case(&id))
    });
    match found {
        Some(Value::Object(d)) => {
            let mut m = serde_json::Map::new();
            m.insert("@odata.context".into(), json!(format!("{}/v1.0/$metadata#domains/$entity", g.ctx.base_url)));
            m.extend(d.clone());
            ok(&Value::Object(m))
        }
        _ => g.error((
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
        )),
    }
}

pub fn organization(g: &GraphReq) -> Resp {
    let verified: Vec<Value> = g
        .tenant
        .domains
        .iter()
        .map(|d| {
            json!({
                "capabilities": "Email, OfficeCommunicationsOnline",
                "isDefault": d["isDefault"],
                "isInitial": d["isInitial"],
                "name": d["id"],
                "type": d["authenticationType"],
            })
        })
        .collect();
    ok(&json!({
        "@odata.context": format!("{}/v1.0/$metadata#organization", g.ctx.base_url),
        "value": [{
            "id": g.tenant.id,
            "displayName": g.tenant.display_name,
            "tenantType": "AAD",
            "verifiedDomains": verified,
        }]
    }))
}
