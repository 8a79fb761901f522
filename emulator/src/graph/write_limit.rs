//! The write limit as Graph answers it (shared/reference/graph-writes.md §4): a refused write
//! gets 429 `TooManyRequests` with `Retry-After`, `x-ms-throttle-scope:
//! Tenant_Application/Write/{appId}/{tenantId}` and `x-ms-throttle-information:
//! WriteLimitExceeded`; an admitted one carries `x-ms-throttle-limit-percentage` once more than
//! 80 % of the quota is in use, as Graph's throttling page describes. Inside `$batch` the
//! same answer becomes the item's status and headers (`batch.rs`).

use http::StatusCode;

use super::GraphReq;
use crate::http::{Resp, graph_error, set_header};
use crate::throttle::Admission;

/// Take one write from the caller's bucket: `Ok(share in use)` or the 429 to send.
pub fn admit(g: &GraphReq) -> Result<f64, Resp> {
    let now = g.state.now_millis();
    match g.state.throttle.admit(&g.tenant.id, g.app_id, now) {
        Admission::Admitted(share) => Ok(share),
        Admission::Throttled(retry) => Err(throttled(g, retry)),
    }
}

/// The 429 of a write over the limit.
pub fn throttled(g: &GraphReq, retry_after: u64) -> Resp {
    // The message is in the style of Graph's identity throttling messages; its exact text for
    // writes is not known (emulator/README.md, "Deviations").
    let mut r = graph_error(
        g.ctx,
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        &format!(
            "Too many requests from Identifier:{}+{} under category:throttle.aad.ags.tenant_application.write. Please try again later.",
            g.tenant.id, g.app_id
        ),
    );
    set_header(&mut r, "retry-after", &retry_after.to_string());
    set_header(
        &mut r,
        "x-ms-throttle-scope",
        &format!("Tenant_Application/Write/{}/{}", g.app_id, g.tenant.id),
    );
    set_header(&mut r, "x-ms-throttle-information", "WriteLimitExceeded");
    r
}

/// `x-ms-throttle-limit-percentage` on an admitted write once over 80 % of the quota is used.
pub fn annotate(r: &mut Resp, share: f64) {
    if share > 0.8 {
        set_header(r, "x-ms-throttle-limit-percentage", &format!("{share:.1}"));
    }
}
