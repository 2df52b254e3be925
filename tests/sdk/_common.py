"""Shared helpers of the SDK drivers: configuration from the environment, one JSON line per
step, and the expected outcome of each step for the sandbox's demo users."""

import json
import os
import sys
import traceback

BASE_URL = os.environ.get("COMPOSIO_BASE_URL", "http://127.0.0.1:8765")
API_KEY = os.environ.get("COMPOSIO_API_KEY", "sbx_project_key")
USER = os.environ.get("USER_ID") or os.environ.get("SDK_USER") or os.environ.get("USER") or "alice"
# The user the calls are expected to run as. Through the gateway that is the JWT's subject,
# whatever USER the SDK sends: EXPECT_SUBJECT=alice with USER=bob and alice's token is the
# forging run (the SDK names bob everywhere; every check expects alice and alice's data).
SUBJECT = os.environ.get("EXPECT_SUBJECT") or USER
FORGED = SUBJECT != USER

# Toolkits in which the user has an ACTIVE, enabled account (sandbox demo data); override with
# EXPECT_ACTIVE=github,slack when pointing the drivers at other data.
_DEMO_ACTIVE = {
    "alice": "github,slack",
    "bob": "github",
    "carol": "",
    "user-1": "github",
}
EXPECT_ACTIVE = {
    t
    for t in os.environ.get("EXPECT_ACTIVE", _DEMO_ACTIVE.get(SUBJECT, "")).split(",")
    if t
}

_failures = []


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        pass
    for attr in ("model_dump", "to_dict", "dict"):
        fn = getattr(value, attr, None)
        if callable(fn):
            try:
                return _jsonable(fn())
            except Exception:  # noqa: BLE001
                pass
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dict__"):
        return {
            k: _jsonable(v)
            for k, v in vars(value).items()
            if not k.startswith("_") and k != "client"
        }
    return repr(value)


def _error_info(exc):
    info = {"type": type(exc).__name__, "message": str(exc)[:500]}
    for attr in ("status_code", "code"):
        if hasattr(exc, attr):
            info[attr] = _jsonable(getattr(exc, attr))
    body = getattr(exc, "body", None)
    if body is None:
        # composio-core 0.7 raises HTTPError whose message is the response's JSON text.
        try:
            body = json.loads(str(exc))
        except ValueError:
            body = None
    if isinstance(body, dict):
        info["body"] = body
        err = body.get("error")
        if isinstance(err, dict) and "code" in err:
            info["api_code"] = err["code"]
            if "slug" in err:
                info["api_slug"] = err["slug"]
    return info


def step(name, fn, expect="success", expect_code=None, check=None):
    """Runs one SDK call and prints one JSON line.

    expect: "success" or "error". expect_code: the Composio error code an expected error must
    carry (checked when the SDK exposes it). check: a function of the result that returns an
    error string when the result is wrong."""
    line = {"step": name, "user": USER, "subject": SUBJECT, "expected": expect}
    result = None
    try:
        result = fn()
        line["outcome"] = "success"
        line["result"] = _jsonable(result)
        problem = check(result) if (check and expect == "success") else None
        if problem:
            line["problem"] = problem
    except Exception as exc:  # noqa: BLE001
        line["outcome"] = "error"
        line["error"] = _error_info(exc)
        if expect == "success":
            line["traceback"] = traceback.format_exc(limit=6)
    ok = line["outcome"] == expect and "problem" not in line
    if ok and expect == "error" and expect_code is not None:
        code = line["error"].get("api_code")
        if code is not None and code != expect_code:
            ok = False
            line["problem"] = f"expected code {expect_code}, got {code}"
    line["ok"] = ok
    print(json.dumps(line, default=repr), flush=True)
    if not ok:
        _failures.append(name)
    return result


def finish():
    print(
        json.dumps({"summary": True, "user": USER, "subject": SUBJECT, "failed": _failures, "ok": not _failures}),
        flush=True,
    )
    sys.exit(1 if _failures else 0)


def expect_for(toolkit):
    return "success" if toolkit in EXPECT_ACTIVE else "error"
