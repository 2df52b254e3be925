"""Drives the old Python SDK (`composio-core` 0.7.22, API v1/v2) through the flows of
composio-wire.md section 8 and prints one JSON line per step.

Environment: COMPOSIO_BASE_URL (with or without the trailing `/api`; the old SDK needs it,
so it is added when missing), COMPOSIO_API_KEY, USER_ID (or USER) for the entity id,
optional EXPECT_SUBJECT (the user the gateway pins the calls to; see _common.py), optional
EXPECT_ACTIVE. Set COMPOSIO_DISABLE_SENTRY=true, COMPOSIO_DISABLE_VERSION_CHECK=true
and a HOME whose .composio/user_data.json is {"sentry": {"dsn": ""}} to keep the SDK offline
(see README.md). Exits non-zero when a step's outcome differs from the expectation."""

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
from _common import API_KEY, FORGED, SUBJECT, USER, expect_for, finish, step  # noqa: E402

warnings.simplefilter("ignore")

BASE = _common.BASE_URL.rstrip("/")
if not BASE.endswith("/api"):
    BASE += "/api"
os.environ["COMPOSIO_BASE_URL"] = BASE

from composio import Action, App, Composio, ComposioToolSet  # noqa: E402

client = Composio(api_key=API_KEY, base_url=BASE)
entity = client.get_entity(USER)


def owned(accounts):
    foreign = [a.id for a in accounts if a.clientUniqueUserId != SUBJECT]
    return f"foreign accounts {foreign}" if foreign else None


connections = step(
    "get_entity(USER).get_connections()",
    entity.get_connections,
    check=owned,
)
github = step(
    "entity.get_connection(app=github)",
    lambda: entity.get_connection(app=App.GITHUB),
    expect=expect_for("github"),
    check=lambda a: None if a.clientUniqueUserId == SUBJECT else "foreign account",
)

toolset = ComposioToolSet(api_key=API_KEY, base_url=BASE, entity_id=USER)


def executed_as_user(res):
    if not (res.get("successful") or res.get("successfull")):
        return f"not successful: {res.get('error')}"
    data = res.get("data") or {}
    if data.get("user_id") not in (None, SUBJECT):
        return f"executed as {data.get('user_id')!r}"
    return None


step(
    "ComposioToolSet(entity_id=USER).execute_action(GITHUB_CREATE_AN_ISSUE)",
    lambda: toolset.execute_action(
        "GITHUB_CREATE_AN_ISSUE", {"owner": "a", "repo": "b", "title": "t"}
    ),
    # In the forged run the SDK itself refuses: it checks the entity's accounts client-side
    # (clientUniqueUserId == entity_id) and the gateway only ever lists the subject's.
    expect="error" if FORGED else expect_for("github"),
    check=executed_as_user,
)
step(
    "execute_action(HACKERNEWS_GET_FRONTPAGE) (no_auth)",
    lambda: toolset.execute_action("HACKERNEWS_GET_FRONTPAGE", {}),
    check=executed_as_user,
)
step(
    "execute_action(GMAIL_SEND_EMAIL)",
    lambda: toolset.execute_action(
        "GMAIL_SEND_EMAIL", {"recipient_email": "x@example.invalid", "body": "hi"}
    ),
    expect=expect_for("gmail"),
    check=executed_as_user,
)
# Without an account the SDK refuses by itself, before any execution request (NoItemsFound, or
# ConnectedAccountNotFoundError when the account is not listed at all). Naming alice's expired
# account makes it ask, so the gateway's refusal shows (HTTPError with code 1803). bob's gmail
# account is disabled, hence not listed: the SDK refuses by itself again. In the forged run it
# refuses too (see above), so the code is only checked when the SDK exposes one.
step(
    f"execute_action(GMAIL_SEND_EMAIL, connected_account_id=ca_{USER}_gmail)",
    lambda: toolset.execute_action(
        "GMAIL_SEND_EMAIL",
        {"recipient_email": "x@example.invalid", "body": "hi"},
        connected_account_id=f"ca_{USER}_gmail",
    ),
    expect="error",
    expect_code=None if FORGED else 1803,
)
if github is not None:
    step(
        "toolset.execute_request(/user, GET, connection_id)",
        lambda: toolset.execute_request("/user", "GET", connection_id=github.id),
    )
    step(
        "connected_accounts.get(connection_id)",
        lambda: client.connected_accounts.get(connection_id=github.id),
        check=lambda a: None if a.clientUniqueUserId == SUBJECT else "foreign account",
    )
# Refused by design: initiate_connection always creates an integration (POST /v1/integrations,
# project administration) before the connection. The workaround is the next step.
step(
    "entity.initiate_connection(github)",
    lambda: entity.initiate_connection("github", redirect_url="https://example.invalid/cb"),
    expect="error",
    expect_code=9122,
)
step(
    "connected_accounts.initiate(integration_id=ac_github, entity_id=USER)",
    lambda: client.connected_accounts.initiate(
        integration_id="ac_github", entity_id=USER, redirect_url="https://example.invalid/cb"
    ),
    check=lambda r: None if r.connectedAccountId else "no connectedAccountId",
)

finish()
