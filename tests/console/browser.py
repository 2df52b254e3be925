"""The console in headless Chromium (driven by tests/console.rs, which starts the gateway).

Selenium with Debian's chromium and chromium-driver. Every step asserts what an operator
would see; a screenshot of each page goes to $SHOTS. Any failure exits non-zero.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CONSOLE = os.environ["CONSOLE_URL"]
PROXY = os.environ["PROXY_URL"]
ADMIN_TOKEN = os.environ["ADMIN_TOKEN"]
ALICE = os.environ["ALICE_TOKEN"]
EVIL = os.environ["EVIL_TOKEN"]
EVIL_SUBJECT = os.environ["EVIL_SUBJECT"]
EVIL_TOOL = os.environ["EVIL_TOOL"]
SHOTS = os.environ["SHOTS"]
OPERATOR = os.environ["OPERATOR_TOKEN"]
EVIL_ARGUMENT = os.environ["EVIL_ARGUMENT"]


def step(msg):
    print(f"[browser] {msg}", flush=True)


def call(token, tool, body=None, query=""):
    """A tool call through the gateway, as an agent makes it; returns (status, request id)."""
    data = json.dumps(body if body is not None else {"arguments": {}}).encode()
    req = urllib.request.Request(
        f"{PROXY}/api/v3.1/tools/execute/{tool}{query}",
        data=data,
        method="POST",
        headers={"x-api-key": token, "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("x-request-id")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-request-id")


def wait(cond, what, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = cond()
            if v:
                return v
        except Exception:  # noqa: BLE001 - the page may be mid-load
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


def shot(driver, name):
    path = os.path.join(SHOTS, f"{name}.png")
    driver.save_screenshot(path)
    step(f"screenshot {path}")


def no_csp_violations(driver):
    logs = driver.get_log("browser")
    bad = [l for l in logs if "Content Security Policy" in l.get("message", "")]
    assert not bad, f"CSP violations: {bad}"
    # The 401 of the wrong token and the 403 of the forged form are expected answers.
    errors = [l for l in logs if l.get("level") == "SEVERE" and l.get("source") != "network"]
    assert not errors, f"browser errors: {errors}"


def not_pwned(driver):
    assert "pwned" not in driver.title, "an attacker's script ran"
    assert driver.execute_script("return window.__pwned === undefined"), "script ran"


def main():
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ["CHROMIUM"]
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--window-size=1400,900", "--disable-gpu", "--no-first-run"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(os.environ["CHROMEDRIVER"]), options=opts)
    driver.set_page_load_timeout(20)
    try:
        scenario(driver)
    finally:
        driver.quit()


def scenario(d):
    # --- no token, no console
    step("the console without a session sends to the login page")
    d.get(f"{CONSOLE}/ui/live")
    wait(lambda: d.current_url.endswith("/ui/login"), "redirect to login")
    shot(d, "01-login")
    d.find_element(By.ID, "token").send_keys("wrong-token")
    d.find_element(By.ID, "signin").click()
    wait(lambda: "not the admin token" in d.page_source, "wrong token refused")
    assert not d.get_cookies(), "a wrong token got a cookie"

    step("sign in")
    d.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    d.find_element(By.ID, "signin").click()
    wait(lambda: d.current_url.endswith("/ui/live"), "live page after login")
    cookies = d.get_cookies()
    assert len(cookies) == 1, cookies
    c = cookies[0]
    assert c["httpOnly"] and c.get("sameSite") == "Strict", c
    assert ADMIN_TOKEN not in json.dumps(cookies), "the token is in a cookie"
    assert ADMIN_TOKEN not in d.current_url
    assert d.execute_script("return window.localStorage.length + window.sessionStorage.length") == 0
    assert d.execute_script("return document.cookie") == "", "the session cookie is readable by script"
    wait(lambda: d.find_element(By.ID, "live-status").text == "live", "the live feed connects")

    # --- a refused call appears live, without a reload
    step("a refused call appears live")
    d.execute_script("window.__marker = 1")
    status, rid = call(ALICE, "GMAIL_SEND_EMAIL")
    assert status >= 400 and rid, (status, rid)
    row = wait(lambda: d.find_element(By.XPATH, f"//tbody[@id='live-rows']/tr[td/a[text()='{rid}']]"),
               "the refused call's row")
    assert "GMAIL_SEND_EMAIL" in row.text and "alice" in row.text, row.text
    assert d.execute_script("return window.__marker") == 1, "the page reloaded"
    allowed, allowed_rid = call(ALICE, "GITHUB_GET_THE_AUTHENTICATED_USER")
    assert allowed == 200, allowed
    wait(lambda: allowed_rid in d.find_element(By.ID, "live-rows").text, "the allowed call's row")

    # --- an attacker's markup is text
    step("markup in a subject and a tool slug is shown as text and runs nothing")
    multi = {"arguments": {"tools": [{"tool_slug": EVIL_TOOL, "arguments": {}}]}}
    _, evil_rid = call(EVIL, "COMPOSIO_MULTI_EXECUTE_TOOL", multi, "?q=%3Cscript%3Ewindow.__pwned%3D1%3C%2Fscript%3E")
    evil_row = wait(lambda: d.find_element(By.XPATH, f"//tbody[@id='live-rows']/tr[td/a[text()='{evil_rid}']]"),
                    "the attacker's row (live)")
    assert EVIL_SUBJECT in evil_row.text, evil_row.text
    assert EVIL_TOOL in evil_row.text, evil_row.text
    assert not d.find_elements(By.CSS_SELECTOR, "#live-rows img, #live-rows script"), "markup became elements"
    not_pwned(d)
    d.refresh()  # the server-rendered rows too
    evil_row = wait(lambda: d.find_element(By.XPATH, f"//tbody[@id='live-rows']/tr[td/a[text()='{evil_rid}']]"),
                    "the attacker's row (rendered)")
    assert EVIL_SUBJECT in evil_row.text and EVIL_TOOL in evil_row.text
    assert not d.find_elements(By.CSS_SELECTOR, "main img, main script")
    not_pwned(d)
    evil_row.find_element(By.LINK_TEXT, evil_rid).click()
    wait(lambda: "/ui/decision" in d.current_url, "decision page")
    assert EVIL_SUBJECT in d.page_source.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"') or EVIL_SUBJECT in d.find_element(By.TAG_NAME, "main").text
    assert not d.find_elements(By.CSS_SELECTOR, "main img, main script")
    not_pwned(d)
    shot(d, "02-decision-escaped")
    d.get(f"{CONSOLE}/ui/user?subject={urllib.parse.quote(EVIL_SUBJECT)}")
    assert EVIL_SUBJECT in d.find_element(By.ID, "subject").text
    assert not d.find_elements(By.CSS_SELECTOR, "main img, main script")
    not_pwned(d)

    # --- filters
    step("filter by slug and toolkit")
    d.get(f"{CONSOLE}/ui/live")
    d.find_element(By.NAME, "toolkit").send_keys("gmail")
    d.find_element(By.NAME, "refused_only").click()
    d.find_element(By.ID, "filter").click()
    wait(lambda: "toolkit=gmail" in d.current_url, "filtered url")
    rows = d.find_elements(By.CSS_SELECTOR, "#live-rows tr[data-seq]")
    assert rows and all("gmail" in r.text for r in rows), [r.text for r in rows]
    assert rid in d.find_element(By.ID, "live-rows").text
    assert allowed_rid not in d.find_element(By.ID, "live-rows").text
    wait(lambda: d.find_element(By.ID, "live-status").text == "live", "filtered feed connects")
    # A new call that does not match the filter stays out; one that matches comes in.
    _, other = call(ALICE, "GITHUB_GET_THE_AUTHENTICATED_USER")
    _, again = call(ALICE, "GMAIL_FETCH_EMAILS")
    wait(lambda: again in d.find_element(By.ID, "live-rows").text, "matching call arrives live")
    assert other not in d.find_element(By.ID, "live-rows").text
    shot(d, "03-live-decisions")

    # --- the user page
    step("the user page")
    d.find_element(By.LINK_TEXT, "alice").click()
    wait(lambda: "/ui/user" in d.current_url, "user page")
    conns = d.find_element(By.ID, "connections").text
    assert "gmail" in conns and "EXPIRED" in conns and "ca_alice_github" in conns, conns
    assert rid in d.find_element(By.ID, "user-decisions").text

    # --- deny this user from the user page; the next call is refused; lift it
    step("deny the user from the user page, see the next call refused, lift it")
    d.find_element(By.ID, "deny-reason").send_keys("incident 42: token leaked")
    d.find_element(By.ID, "deny-expiry").send_keys("30")
    d.find_element(By.ID, "deny-user-button").click()
    wait(lambda: "incident 42" in d.page_source, "the rule on the user page")
    assert "/ui/user" in d.current_url and "subject=alice" in d.current_url, d.current_url
    assert "subject=alice" in d.find_element(By.CSS_SELECTOR, "table.rules").text
    denied, denied_rid = call(ALICE, "GITHUB_GET_THE_AUTHENTICATED_USER")
    assert denied == 403, denied
    shot(d, "04-user")
    d.get(f"{CONSOLE}/ui/live?subject=alice")
    row = wait(lambda: d.find_element(By.XPATH, f"//tbody[@id='live-rows']/tr[td/a[text()='{denied_rid}']]"),
               "the denied call in the feed")
    assert "allow" not in row.find_elements(By.TAG_NAME, "td")[5].text, row.text
    d.get(f"{CONSOLE}/ui/user?subject=alice")
    d.find_element(By.CSS_SELECTOR, "table.rules button.lift").click()
    wait(lambda: "incident 42" not in d.page_source, "the rule lifted")
    again_ok, _ = call(ALICE, "GITHUB_GET_THE_AUTHENTICATED_USER")
    assert again_ok == 200, again_ok

    # --- the kill switch page: add a toolkit rule with an expiry, see it, lift it
    step("the kill switch page")
    d.get(f"{CONSOLE}/ui/killswitch")
    from selenium.webdriver.support.ui import Select
    Select(d.find_element(By.ID, "deny-kind")).select_by_value("toolkit")
    d.find_element(By.ID, "deny-value").send_keys("github")
    d.find_element(By.ID, "deny-reason").send_keys("GitHub incident: all writes paused")
    d.find_element(By.ID, "deny-expiry").send_keys("15")
    d.find_element(By.ID, "deny-add-button").click()
    wait(lambda: "toolkit=github" in d.find_element(By.CSS_SELECTOR, "table.rules").text, "toolkit rule listed")
    assert "in 15 min" in d.find_element(By.CSS_SELECTOR, "table.rules").text
    blocked, _ = call(ALICE, "GITHUB_GET_THE_AUTHENTICATED_USER")
    assert blocked == 403, blocked
    shot(d, "08-kill-switch")
    d.find_element(By.CSS_SELECTOR, "table.rules button.lift").click()
    wait(lambda: "toolkit=github" not in d.find_element(By.CSS_SELECTOR, "table.rules").text, "lifted")
    ok_again, _ = call(ALICE, "GITHUB_GET_THE_AUTHENTICATED_USER")
    assert ok_again == 200, ok_again

    # --- refusals
    step("refusals over the last hour")
    d.get(f"{CONSOLE}/ui/refusals")
    assert int(d.find_element(By.ID, "refusal-total").text) >= 3
    assert d.find_elements(By.CSS_SELECTOR, "#by-slug rect"), "no bars"
    assert "gmail" in d.find_element(By.ID, "by-toolkit").text
    shot(d, "05-refusals")

    # --- policy and explain
    step("policy and an explain dry run")
    d.get(f"{CONSOLE}/ui/policy")
    assert "no-notion" in d.find_element(By.ID, "rules").text
    d.find_element(By.ID, "explain-token").send_keys(ALICE)
    req = d.find_element(By.ID, "explain-request")
    req.clear()
    req.send_keys("POST /api/v3.1/tools/execute/NOTION_CREATE_PAGE")
    d.find_element(By.ID, "explain-body").send_keys('{"arguments": {}}')
    d.find_element(By.ID, "explain-run").click()
    out = wait(lambda: d.find_element(By.ID, "explain-text"), "explain result")
    assert "no-notion" in out.text and "refused" in out.text, out.text
    assert d.find_element(By.ID, "explain-token").get_attribute("value") == "", "the JWT was echoed"
    shot(d, "06-policy-explain")

    # --- health
    step("health")
    d.get(f"{CONSOLE}/ui/health")
    assert d.find_element(By.ID, "ready").text == "yes"
    shot(d, "07-health")

    # --- CSRF: a state change without the token is refused, even from the console's origin
    step("a form without its CSRF token is refused")
    code = d.execute_script(
        "var f = new URLSearchParams({kind: 'all', reason: 'forged'});"
        "var x = new XMLHttpRequest(); x.open('POST', '/ui/killswitch/add', false);"
        "x.setRequestHeader('content-type', 'application/x-www-form-urlencoded'); x.send(f.toString());"
        "return x.status;")
    assert code == 403, code
    ok_still, _ = call(ALICE, "GITHUB_GET_THE_AUTHENTICATED_USER")
    assert ok_still == 200, "a forged form denied everything"
    code = d.execute_script(
        "var f = new URLSearchParams({request: 'GET /api/v3/toolkits', token: 'x'});"
        "var x = new XMLHttpRequest(); x.open('POST', '/ui/policy/explain', false);"
        "x.setRequestHeader('content-type', 'application/x-www-form-urlencoded'); x.send(f.toString());"
        "return x.status;")
    assert code == 403, code

    no_csp_violations(d)

    # --- sign out
    step("sign out")
    d.get(f"{CONSOLE}/ui/live")
    d.find_element(By.ID, "logout").click()
    wait(lambda: d.current_url.endswith("/ui/login"), "login page after logout")
    d.get(f"{CONSOLE}/ui/health")
    wait(lambda: d.current_url.endswith("/ui/login"), "signed out for good")

    approvals(d)
    step("ok")


def approvals(d):
    """An operator approves one call from the Approvals page; the agent's retry passes once."""
    step("sign in as the operator dana; the Approvals page is live")
    d.get(f"{CONSOLE}/ui/login")
    d.find_element(By.ID, "token").send_keys(OPERATOR)
    d.find_element(By.ID, "signin").click()
    wait(lambda: d.current_url.endswith("/ui/live"), "signed in as dana")
    d.get(f"{CONSOLE}/ui/approvals")
    wait(lambda: d.find_element(By.ID, "approvals-status").text == "live", "the approvals feed connects")
    assert d.find_element(By.ID, "approvals-operator").text == "dana"

    step("an agent's call with markup in its arguments waits for approval and appears live")
    body = {"arguments": {"channel": "#general", "text": EVIL_ARGUMENT}}
    status, _ = call(ALICE, "SLACK_SEND_MESSAGE", body)
    assert status == 403, status
    wait(lambda: d.find_elements(By.CSS_SELECTOR, "#approvals-live .approval-new"), "the live notice")
    not_pwned(d)
    d.get(f"{CONSOLE}/ui/approvals")
    card = wait(lambda: d.find_element(By.CSS_SELECTOR, ".approval"), "the pending request")
    args = card.find_element(By.CSS_SELECTOR, "pre.arguments").text
    # Shown as the JSON text it is (its quotes escaped), never as markup.
    assert json.dumps(EVIL_ARGUMENT)[1:-1] in args, args
    assert not card.find_elements(By.TAG_NAME, "img"), "an argument became markup"
    not_pwned(d)
    shot(d, "20-approvals")

    step("approve it with a reason; the retry passes once, the next needs approval again")
    card.find_element(By.CSS_SELECTOR, "input.approval-reason").send_keys("checked with alice")
    card.find_element(By.CSS_SELECTOR, "button.approve").click()
    wait(lambda: "No pending requests." in d.page_source, "the request left the pending list")
    recent = d.find_element(By.ID, "approvals-recent").text
    assert "approved" in recent and "dana" in recent and "checked with alice" in recent, recent
    status, _ = call(ALICE, "SLACK_SEND_MESSAGE", body)
    assert status == 200, status
    status, _ = call(ALICE, "SLACK_SEND_MESSAGE", body)
    assert status == 403, status
    not_pwned(d)
    no_csp_violations(d)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"[browser] FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
