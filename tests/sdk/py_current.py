"""Drives the current Python SDK (`composio` 0.30.0, API v3.1) through the flows of
composio-wire.md section 8 and prints one JSON line per step.

Environment: COMPOSIO_BASE_URL, COMPOSIO_API_KEY, USER_ID (or USER) for the user id,
optional EXPECT_SUBJECT (the user the gateway pins the calls to; see _common.py), optional
EXPECT_ACTIVE (comma list of toolkits in which the user has a usable account).
Exits non-zero when a step's outcome differs from the expectation."""

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import API_KEY, BASE_URL, FORGED, SUBJECT, USER, expect_for, finish, step  # noqa: E402

warnings.simplefilter("ignore")

from composio import Composio  # noqa: E402

composio = Composio(
    api_key=API_KEY,
    base_url=BASE_URL,
    allow_tracking=False,
    toolkit_versions={
        "github": "20250909_00",
        "gmail": "20250909_00",
        "slack": "20250909_00",
        "hackernews": "20250909_00",
    },
)


def data_user(res):
    data = res.get("data") or {}
    if "user_id" in data and data["user_id"] != SUBJECT:
        return f"executed as {data['user_id']!r}, not {SUBJECT!r}"
    if not res.get("successful"):
        return f"not successful: {res.get('error')}"
    return None


step(
    "tools.execute GITHUB_CREATE_ISSUE",
    lambda: composio.tools.execute(
        "GITHUB_CREATE_ISSUE",
        {"owner": "a", "repo": "b", "title": "hi"},
        user_id=USER,
    ),
    expect=expect_for("github"),
    expect_code=1803,
    check=data_user,
)
step(
    "tools.execute HACKERNEWS_GET_FRONTPAGE (no_auth)",
    lambda: composio.tools.execute("HACKERNEWS_GET_FRONTPAGE", {}, user_id=USER),
    check=lambda r: None if r.get("successful") else r.get("error"),
)
step(
    "tools.execute GMAIL_SEND_EMAIL",
    lambda: composio.tools.execute(
        "GMAIL_SEND_EMAIL",
        {"recipient_email": "x@example.invalid", "body": "hi"},
        user_id=USER,
    ),
    expect=expect_for("gmail"),
    expect_code=1803,
    check=data_user,
)
step(
    "tools.execute SLACK_SEND_MESSAGE",
    lambda: composio.tools.execute(
        "SLACK_SEND_MESSAGE", {"channel": "#general", "text": "hi"}, user_id=USER
    ),
    expect=expect_for("slack"),
    expect_code=1803,
    check=data_user,
)
step(
    "tools.get(toolkits=[github])",
    lambda: composio.tools.get(user_id=USER, toolkits=["github"]),
    check=lambda r: None if r else "no tools",
)
step(
    "toolkits.get(github)",
    lambda: composio.toolkits.get("github"),
    check=lambda r: None if r.slug == "github" else f"slug {r.slug}",
)
# Refused by design: authorize lists (and may create) auth configs, project administration.
# The workaround is connected_accounts.link(user, auth_config_id) below.
step(
    "toolkits.authorize(github)",
    lambda: composio.toolkits.authorize(user_id=USER, toolkit="github"),
    expect="error",
    expect_code=9122,
)

listed = step(
    "connected_accounts.list(user_ids=[USER])",
    lambda: composio.connected_accounts.list(user_ids=[USER]),
    check=lambda r: next(
        (f"foreign account {i.id}" for i in r.items if getattr(i, "user_id", SUBJECT) != SUBJECT),
        None,
    ),
)
github = step(
    "connected_accounts.list(toolkit_slugs=[github], statuses=[ACTIVE])",
    lambda: composio.connected_accounts.list(
        user_ids=[USER], toolkit_slugs=["github"], statuses=["ACTIVE"]
    ),
)
github_id = github.items[0].id if github is not None and github.items else None
if github_id:
    step(
        "connected_accounts.get",
        lambda: composio.connected_accounts.get(github_id),
        check=lambda r: None if r.id == github_id else "wrong account",
    )
    step(
        "tools.execute with connected_account_id",
        lambda: composio.tools.execute(
            "GITHUB_GET_THE_AUTHENTICATED_USER",
            {},
            user_id=USER,
            connected_account_id=github_id,
        ),
        check=data_user,
    )
    step(
        "tools.proxy",
        lambda: composio.tools.proxy(
            endpoint="/user", method="GET", connected_account_id=github_id, user_id=USER
        ),
        check=lambda r: None if r.status == 200 else f"status {r.status}",
    )

if FORGED:
    # Naming the forged user's own account: not the subject's, refused before Composio.
    step(
        f"tools.execute with connected_account_id=ca_{USER}_github",
        lambda: composio.tools.execute(
            "GITHUB_GET_THE_AUTHENTICATED_USER",
            {},
            user_id=USER,
            connected_account_id=f"ca_{USER}_github",
        ),
        expect="error",
        expect_code=1812,
    )

linked = step(
    "connected_accounts.link(ac_notion)",
    lambda: composio.connected_accounts.link(
        USER, "ac_notion", callback_url="https://example.invalid/cb"
    ),
    check=lambda r: None if r.id and r.redirect_url else "no id / redirect_url",
)
initiated = step(
    "connected_accounts.initiate(ac_text_to_pdf)",
    lambda: composio.connected_accounts.initiate(
        USER, "ac_text_to_pdf", callback_url="https://example.invalid/cb", allow_multiple=True
    ),
    check=lambda r: None if r.id else "no id",
)
if linked is not None:
    step("connected_accounts.disable(new)", lambda: composio.connected_accounts.disable(linked.id))
    step("connected_accounts.enable(new)", lambda: composio.connected_accounts.enable(linked.id))
    step("connected_accounts.refresh(new)", lambda: composio.connected_accounts.refresh(linked.id))
    step("connected_accounts.delete(new)", lambda: composio.connected_accounts.delete(linked.id))
if initiated is not None:
    step("connected_accounts.delete(initiated)", lambda: composio.connected_accounts.delete(initiated.id))

step(
    "triggers.create GITHUB_COMMIT_EVENT",
    lambda: composio.triggers.create(
        "GITHUB_COMMIT_EVENT", user_id=USER, trigger_config={"owner": "a", "repo": "b"}
    ),
    expect=expect_for("github"),
    expect_code=1803,
    check=lambda r: None if r.trigger_id else "no trigger_id",
)
if github_id:
    step(
        "triggers.list_active(connected_account_ids=[github])",
        lambda: composio.triggers.list_active(connected_account_ids=[github_id]),
        check=lambda r: next(
            (f"foreign trigger {i.id}" for i in r.items if i.user_id != SUBJECT), None
        ),
    )
step(
    "mcp.generate(mcp_1)",
    lambda: composio.mcp.generate(USER, "mcp_1"),
    check=lambda r: None if f"user_id={SUBJECT}" in r["url"] else f"url {r['url']}",
)

session = step(
    "sessions.create(toolkits=[github])",
    lambda: composio.create(user_id=USER, toolkits=["github"]),
    check=lambda s: None if s.session_id else "no session id",
)
if session is not None:
    step(
        "session.execute GITHUB_GET_THE_AUTHENTICATED_USER",
        lambda: session.execute("GITHUB_GET_THE_AUTHENTICATED_USER", arguments={}),
        expect=expect_for("github"),
        expect_code=1803,
    )
    step(
        "session.proxy_execute github /user",
        lambda: session.proxy_execute(toolkit="github", endpoint="/user", method="GET"),
        expect=expect_for("github"),
        expect_code=1803,
    )
    step("session.toolkits", lambda: session.toolkits())
    step(
        "session.authorize github",
        lambda: session.authorize("github", callback_url="https://example.invalid/cb"),
    )

finish()
