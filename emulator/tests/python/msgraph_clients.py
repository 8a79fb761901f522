"""Drive entra-emulator with Microsoft's own Python libraries, unchanged but for the endpoint.

Environment: EMU_BASE (https://127.0.0.1:PORT), EMU_CA (CA file), EMU_TENANT, EMU_CLIENT_ID,
EMU_CLIENT_SECRET, EMU_EXPECTED_USERS, EMU_EXPECTED_GUESTS, EMU_EXPECTED_IN_DOMAIN. REQUESTS_CA_BUNDLE must point at
EMU_CA too: requests (used by msal) lets it override any `verify`; and SSL_CERT_FILE too: the
async azure-identity credential goes through aiohttp, which reads the default SSL context.
Prints one JSON line with what it saw; exits non-zero on any failed check.
"""

import asyncio
import json
import os
import ssl
import sys

import httpx
import msal
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import ClientSecretCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.users.users_request_builder import UsersRequestBuilder
from msgraph_core import GraphClientFactory

BASE = os.environ["EMU_BASE"]
CA = os.environ["EMU_CA"]
TENANT = os.environ["EMU_TENANT"]
CLIENT_ID = os.environ["EMU_CLIENT_ID"]
SECRET = os.environ["EMU_CLIENT_SECRET"]
EXPECTED = int(os.environ["EMU_EXPECTED_USERS"])
EXPECTED_GUESTS = int(os.environ["EMU_EXPECTED_GUESTS"])
EXPECTED_IN_DOMAIN = int(os.environ["EMU_EXPECTED_IN_DOMAIN"])
SCOPE = "https://graph.microsoft.com/.default"


def check(cond, what):
    if not cond:
        print(f"CHECK FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def msal_part(report):
    authority = f"{BASE}/{TENANT}"
    app = msal.ConfidentialClientApplication(
        CLIENT_ID, client_credential=SECRET, authority=authority, instance_discovery=False
    )
    r = app.acquire_token_for_client(scopes=[SCOPE])
    check("access_token" in r, f"msal token: {r}")
    check(r.get("token_type") == "Bearer", f"token_type: {r}")
    r2 = app.acquire_token_for_client(scopes=[SCOPE])
    check(r2.get("token_source") == "cache", f"second call from cache: {r2.get('token_source')}")
    bad = msal.ConfidentialClientApplication(
        CLIENT_ID, client_credential="wrong-secret", authority=authority, instance_discovery=False
    )
    rb = bad.acquire_token_for_client(scopes=[SCOPE])
    check(rb.get("error") == "invalid_client", f"wrong secret error: {rb}")
    check(7000215 in rb.get("error_codes", []), f"wrong secret code: {rb}")
    check(rb.get("error_description", "").startswith("AADSTS7000215:"), f"description: {rb}")
    report["msal_wrong_secret"] = rb["error_codes"]


def graph_client(secret):
    cred = ClientSecretCredential(
        TENANT, CLIENT_ID, secret, authority=BASE, disable_instance_discovery=True
    )
    auth = AzureIdentityAuthenticationProvider(cred, scopes=[SCOPE], allowed_hosts=["127.0.0.1"])
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=ssl.create_default_context(cafile=CA), timeout=60)
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = f"{BASE}/v1.0"
    return GraphServiceClient(request_adapter=adapter), cred


async def graph_part(report):
    client, cred = graph_client(SECRET)
    params = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
        select=["id", "userPrincipalName", "displayName", "givenName", "surname", "mail",
                "accountEnabled", "userType", "onPremisesImmutableId", "proxyAddresses"],
        top=999,
    )
    page = await client.users.get(request_configuration=RequestConfiguration(query_parameters=params))
    users = list(page.value)
    pages = 1
    while page.odata_next_link:
        check(page.odata_next_link.startswith(f"{BASE}/v1.0/users?"), f"nextLink {page.odata_next_link}")
        page = await client.users.with_url(page.odata_next_link).get()
        users.extend(page.value)
        pages += 1
    check(len(users) == EXPECTED, f"listed {len(users)} users, expected {EXPECTED}")
    check(len({u.id for u in users}) == EXPECTED, "ids are unique")
    check(all(u.user_principal_name and u.display_name for u in users), "every user has a UPN and a name")
    guests = [u for u in users if u.user_type == "Guest"]
    check(len(guests) == EXPECTED_GUESTS, f"{len(guests)} guests, expected {EXPECTED_GUESTS}")
    check(all("#EXT#@" in g.user_principal_name for g in guests), "guest UPNs carry #EXT#")
    check(any(u.account_enabled is False for u in users), "some users are disabled")
    check(any(u.on_premises_immutable_id for u in users), "some users carry onPremisesImmutableId")
    check(any("山" in (u.display_name or "") for u in users), "Japanese names")
    check(any(u.mail is None and any(p.startswith("SMTP:") for p in (u.proxy_addresses or [])) for u in users),
          "some users have only proxyAddresses")

    # The advanced query the operator uses: endswith + ConsistencyLevel + $count. (Small pages:
    # msgraph-sdk spends ~10 ms of CPU deserializing each user, so one full listing is enough.)
    params = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
        filter="endswith(userPrincipalName,'@example.com')", count=True, top=5,
        select=["id", "userPrincipalName"],
    )
    cfg = RequestConfiguration(query_parameters=params)
    cfg.headers.add("ConsistencyLevel", "eventual")
    page = await client.users.get(request_configuration=cfg)
    count = page.odata_count
    check(count == EXPECTED_IN_DOMAIN, f"@odata.count {count}, expected {EXPECTED_IN_DOMAIN}")
    check(all(u.user_principal_name.endswith("@example.com") for u in page.value), "endswith filter")
    # The header is not carried in the nextLink: resend it.
    cfg2 = RequestConfiguration()
    cfg2.headers.add("ConsistencyLevel", "eventual")
    page2 = await client.users.with_url(page.odata_next_link).get(request_configuration=cfg2)
    check(len(page2.value) == 5 and page2.odata_count is None, "second page: 5 users, no @odata.count")
    in_domain = count
    await cred.close()

    # A wrong secret through azure-identity surfaces AADSTS7000215 too.
    bad_client, bad_cred = graph_client("wrong-secret")
    try:
        await bad_client.users.get()
        check(False, "wrong secret must fail")
    except ClientAuthenticationError as e:
        check("AADSTS7000215" in str(e), f"azure-identity error: {e}")
    await bad_cred.close()
    report.update({"users": len(users), "pages": pages, "guests": len(guests), "in_domain": in_domain})


def main():
    report = {}
    msal_part(report)
    asyncio.run(graph_part(report))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
