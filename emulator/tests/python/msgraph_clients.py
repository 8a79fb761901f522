"""Drive entra-emulator with Microsoft's own Python libraries, unchanged but for the endpoint.

Reads (a generated tenant listed through every nextLink), then writes (issue #14): create,
update, delete and restore a user, the duplicate-UPN error, and the 403 of an app without
User.ReadWrite.All. The app EMU_CLIENT_ID must hold User.ReadWrite.All (the emulator is started
with --app-roles); the read-only app is registered through the emulator's control API.

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
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.password_profile import PasswordProfile
from msgraph.generated.models.user import User
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
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


def graph_client(secret, client_id=CLIENT_ID):
    cred = ClientSecretCredential(
        TENANT, client_id, secret, authority=BASE, disable_instance_discovery=True
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


PASSWORD = "xWwvJ]6NMw+bWH-d"
DUPLICATE = "Another object with the same value for property userPrincipalName already exists."


def new_user(local):
    return User(
        account_enabled=True,
        display_name=f"SDK {local}",
        mail_nickname=local,
        user_principal_name=f"{local}@example.com",
        password_profile=PasswordProfile(force_change_password_next_sign_in=True, password=PASSWORD),
    )


async def expect_error(call, status, code, what):
    try:
        await call
    except ODataError as e:
        check(e.response_status_code == status, f"{what}: status {e.response_status_code}")
        check(e.error is not None and e.error.code == code, f"{what}: code {e.error and e.error.code}")
        return e
    check(False, f"{what} must fail")


async def write_part(report):
    client, cred = graph_client(SECRET)
    created = await client.users.post(new_user("sdk.writer"))
    check(created.id and created.user_principal_name == "sdk.writer@example.com", f"created: {created}")
    check(created.display_name == "SDK sdk.writer", "created display name")

    # PATCH: only the changed properties; a real null clears. kiota sends one through
    # additional_data (an attribute set to None goes out as an unknown "given_name" key, which
    # the emulator refuses as Graph does).
    await client.users.by_user_id(created.id).patch(User(job_title="Tester", given_name="Sdk"))
    await client.users.by_user_id(created.id).patch(User(additional_data={"givenName": None}))
    select = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(
        select=["id", "jobTitle", "givenName", "userPrincipalName"]
    )
    got = await client.users.by_user_id(created.id).get(
        request_configuration=RequestConfiguration(query_parameters=select)
    )
    check(got.job_title == "Tester", f"updated jobTitle: {got.job_title}")
    check(got.given_name is None, f"givenName cleared: {got.given_name}")

    # The real error for a duplicate UPN, with its ObjectConflict detail.
    e = await expect_error(client.users.post(new_user("sdk.writer")), 400, "Request_BadRequest", "duplicate UPN")
    check(e.error.message == DUPLICATE, f"duplicate message: {e.error.message}")
    duplicate = e.error.message
    details = e.error.details or []
    check(len(details) == 1 and details[0].code == "ObjectConflict" and details[0].target == "userPrincipalName",
          f"duplicate details: {details}")

    # DELETE is a soft delete: gone from /users, listed in deleted items, restored as the same object.
    await client.users.by_user_id(created.id).delete()
    await expect_error(client.users.by_user_id(created.id).get(), 404, "Request_ResourceNotFound", "deleted user")
    deleted = await client.directory.deleted_items.graph_user.get()
    gone = [d for d in deleted.value if d.id == created.id]
    check(len(gone) == 1, f"deleted items list the user: {[d.id for d in deleted.value]}")
    check(gone[0].user_principal_name == created.id.replace("-", "") + "sdk.writer@example.com",
          f"deleted UPN: {gone[0].user_principal_name}")
    restored = await client.directory.deleted_items.by_directory_object_id(created.id).restore.post()
    check(restored.id == created.id and restored.odata_type == "#microsoft.graph.user", f"restored: {restored}")
    check(isinstance(restored, User) and restored.user_principal_name == "sdk.writer@example.com",
          f"restored as a user: {type(restored)}")
    again = await client.users.by_user_id("sdk.writer@example.com").get()
    check(again.id == created.id, "the same object is back")
    await cred.close()

    # An app without User.ReadWrite.All (registered through the control API) gets the real 403.
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=CA)) as http:
        r = await http.put(f"{BASE}/_emulator/applications", json={
            "clientId": "sdk-read-only", "clientSecret": "ro-secret", "roles": ["User.Read.All"]})
        check(r.status_code == 200, f"register read-only app: {r.status_code} {r.text}")
    ro, ro_cred = graph_client("ro-secret", client_id="sdk-read-only")
    e = await expect_error(ro.users.post(new_user("sdk.denied")), 403, "Authorization_RequestDenied", "read-only create")
    check(e.error.message == "Insufficient privileges to complete the operation.", f"403 message: {e.error.message}")
    await expect_error(ro.users.by_user_id(created.id).patch(User(job_title="x")), 403,
                       "Authorization_RequestDenied", "read-only update")
    await ro_cred.close()
    report.update({"created": created.id, "restored": restored.id, "duplicate": duplicate,
                   "read_only": e.response_status_code})


def main():
    report = {}
    msal_part(report)
    asyncio.run(graph_part(report))
    asyncio.run(write_part(report))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
