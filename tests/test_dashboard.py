"""The dashboard: signing in with a token, the session cookie and its flags, scopes, CSRF, no 500
on any input (Flask's test client against a real git repo and SQLite store); then a real browser
(Debian's chromium driven by Playwright) against `hookdeploy serve` and a real Docker engine:
sign in, see the live SHA, press rollback, watch the job, see the live SHA change.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from docker_helpers import site_files, unavailable
from hookdeploy.core import tokens
from hookdeploy.web.sessions import COOKIE
from hookdeploy.core.models import JobKind, JobState, Trigger
from webhook_helpers import API_SECRET as SECRET, Server, release

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SCREENSHOT = Path(__file__).parent.parent / "docs" / "dashboard.png"  # rewritten with HOOKDEPLOY_UPDATE_SCREENSHOT=1


@pytest.fixture
def dash(web_app):
    """The web app (test client, store, SHAs) with two releases of `site`: shas[0], then shas[1] live."""
    release(web_app.store, "site", web_app.shas[0])
    release(web_app.store, "site", web_app.shas[1])
    return web_app


# -- signing in ------------------------------------------------------------------------------------


def test_signed_out_visitors_are_sent_to_the_sign_in_page(dash):
    response = dash.client.get("/")
    assert response.status_code == 303 and response.headers["Location"].endswith("/signin")
    page = dash.client.get("/signin")
    assert page.status_code == 200 and 'name="token"' in page.get_data(as_text=True)
    for path in ("/jobs/1", "/jobs/1/events"):
        assert dash.client.get(path).status_code == 303
    assert dash.client.post("/apps/site/rollback").status_code == 401
    assert dash.store.jobs(states=(JobState.QUEUED,)) == []


def test_good_token_gives_a_signed_httponly_samesite_strict_cookie_without_the_token(dash):
    token = tokens.create(SECRET, "deploy")
    response = dash.client.post("/signin", data={"token": f"  {token}\n"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/")
    [cookie] = response.headers.getlist("Set-Cookie")
    assert cookie.startswith(f"{COOKIE}=")
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path", "max-age"} <= flags and "SameSite=Strict" in cookie
    assert token not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    with pytest.raises(tokens.InvalidToken):  # a session cookie is not an API token
        tokens.verify(SECRET, value)

    page = dash.client.get("/").get_data(as_text=True)
    assert dash.shas[1][:12] in page and "commit 1" in page  # live SHA and its commit subject
    assert "Roll back" in page and "Replay" in page and "deploy scope" in page


@pytest.mark.slow
def test_bad_foreign_and_expired_tokens_are_refused(dash):
    expiring = tokens.create(SECRET, "deploy", ttl=1)
    time.sleep(2.1)
    for token, says in (("", "invalid"), ("garbage", "invalid"), (tokens.create(b"other secret", "deploy"), "invalid"),
                        (expiring, "expired"), ("x" * 10_000, "invalid")):
        response = dash.client.post("/signin", data={"token": token})
        assert response.status_code == 401 and says in response.get_data(as_text=True)
        assert not response.headers.getlist("Set-Cookie")
        assert dash.client.get("/").status_code == 303


@pytest.mark.slow
def test_session_ends_with_its_token_and_tampered_cookies_are_ignored(dash):
    # Token timestamps are whole seconds: a ttl of 3 lives 2 to 3 s.
    assert dash.sign_in(ttl=3).status_code == 303
    assert dash.client.get("/").status_code == 200
    time.sleep(3.2)
    assert dash.client.get("/").status_code == 303

    dash.sign_in()
    value = dash.client.get_cookie(COOKIE).value
    for forged in (value[:-2] + ("AA" if not value.endswith("AA") else "BB"), tokens.create(SECRET, "deploy"), "x"):
        dash.client.set_cookie(COOKIE, forged)
        assert dash.client.get("/").status_code == 303


def test_sign_out_clears_the_cookie(dash):
    dash.sign_in()
    response = dash.client.post("/signout", data={"csrf": dash.csrf()})
    assert response.status_code == 303 and response.headers["Location"].endswith("/signin")
    assert dash.client.get_cookie(COOKIE) is None
    assert dash.client.get("/").status_code == 303


def test_no_secret_means_no_sign_in(dash, monkeypatch):
    monkeypatch.delenv("HOOKDEPLOY_SECRET")
    for response in (dash.client.get("/signin"), dash.client.post("/signin", data={"token": "x"}),
                     dash.client.get("/", follow_redirects=True)):
        assert response.status_code == 503 and "secret" in response.get_data(as_text=True)


# -- scopes and CSRF ----------------------------------------------------------------------------------


def test_read_scope_sees_everything_but_no_buttons_and_cannot_act(dash):
    dash.sign_in("read")
    page = dash.client.get("/").get_data(as_text=True)
    assert dash.shas[1][:12] in page and "read scope" in page
    assert "Roll back" not in page and "Replay" not in page and "/rollback" not in page
    csrf = dash.csrf()
    for path, form in (("/apps/site/rollback", {}), ("/apps/site/replay", {"sha": dash.shas[2]})):
        response = dash.client.post(path, data={"csrf": csrf, **form})
        assert response.status_code == 403 and "deploy scope" in response.get_data(as_text=True)
    assert dash.store.jobs(states=(JobState.QUEUED,)) == []


def test_csrf_token_missing_wrong_or_from_another_session_is_rejected(dash):
    dash.sign_in()
    stale = dash.csrf()
    dash.sign_in()  # a new session: the old form's token no longer fits
    assert dash.csrf() != stale
    for form, headers in (({}, {}), ({"csrf": ""}, {}), ({"csrf": "0" * 64}, {}), ({"csrf": stale}, {}),
                          ({"csrf": dash.csrf()}, {"Origin": "https://evil.example"})):
        response = dash.client.post("/apps/site/rollback", data=form, headers=headers)
        assert response.status_code == 403, (form, headers)
    assert dash.store.jobs(states=(JobState.QUEUED,)) == []

    dash.client.delete_cookie(COOKIE)  # signing in from another site's page (login CSRF) is refused too
    response = dash.client.post("/signin", data={"token": tokens.create(SECRET, "read")},
                                headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and not response.headers.getlist("Set-Cookie")


def test_rollback_and_replay_buttons_queue_jobs_as_the_cli_does(dash):
    dash.sign_in()
    response = dash.client.post("/apps/site/rollback", data={"csrf": dash.csrf()})
    assert response.status_code == 303
    job_id = int(response.headers["Location"].rsplit("/", 1)[1])
    job = dash.store.job(job_id)
    assert (job.kind, job.trigger, job.sha, job.state) == (JobKind.ROLLBACK, Trigger.ROLLBACK, dash.shas[0],
                                                           JobState.QUEUED)

    response = dash.client.post("/apps/site/replay", data={"csrf": dash.csrf(), "sha": dash.shas[2][:9]},
                                headers={"Origin": "http://localhost"})
    assert response.status_code == 303
    replayed = dash.store.job(int(response.headers["Location"].rsplit("/", 1)[1]))
    assert (replayed.trigger, replayed.sha) == (Trigger.REPLAY, dash.shas[2])
    assert dash.store.job(job_id).state is JobState.SUPERSEDED  # coalesced, as any enqueue

    page = dash.client.get(f"/jobs/{replayed.id}").get_data(as_text=True)
    assert "queued" in page and dash.shas[2][:12] in page and 'data-active="1"' in page


# -- the job page and its feed ------------------------------------------------------------------------


def test_job_page_shows_steps_and_log_and_the_feed_returns_what_is_new(dash):
    dash.sign_in("read")
    job = dash.store.enqueue("site", dash.shas[2])
    dash.store.claim("test", ["site"])
    dash.store.log(job.id, "Building", kind="step", duration=1.25)
    dash.store.log(job.id, "<script>alert(1)</script>")
    page = dash.client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "Building" in page and "1.2 s" in page and "running" in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page

    feed = dash.client.get(f"/jobs/{job.id}/events").get_json()
    assert feed["job"]["state"] == "running" and feed["job"]["active"] is True
    last = feed["events"][-1]["id"]
    dash.store.finish(job.id, JobState.FAILED, "build failed")
    newer = dash.client.get(f"/jobs/{job.id}/events?after={last}").get_json()
    assert [event["message"] for event in newer["events"]] == ["failed: build failed"]
    assert newer["job"]["active"] is False and newer["job"]["error"] == "build failed"


def test_no_input_produces_a_500(dash):
    dash.sign_in()
    csrf = dash.csrf()
    gets = ["/jobs/999999", "/jobs/0", "/jobs/-1", "/jobs/1/events?after=-1", "/jobs/1/events?after=x",
            "/jobs/1/events?after=" + "9" * 40, "/jobs/abc", "/static/../receiver.py", "/static/nothing.css",
            "/signin?next=//evil", "/%00", "/jobs/1/events?after=%00"]
    posts = [("/apps/nope/rollback", {}), ("/apps/site/rollback", {"to": "zz"}), ("/apps/site/rollback", {"to": "0" * 40}),
             ("/apps/site/rollback", {"to": dash.shas[1]}), ("/apps/site/replay", {}), ("/apps/site/replay", {"sha": "g" * 8}),
             ("/apps/site/replay", {"sha": "0" * 40}), ("/apps/site/replay", {"sha": "\x00"}), ("/signin", {"token": "\x00"}),
             ("/apps/%2e%2e/replay", {"sha": "abc"})]
    for path in gets:
        assert dash.client.get(path).status_code < 500, path
    for path, form in posts:
        response = dash.client.post(path, data={"csrf": csrf, **form})
        assert response.status_code < 500 and response.status_code != 303, (path, form, response.status_code)
    for method in ("PUT", "DELETE", "PATCH"):
        assert dash.client.open("/", method=method).status_code < 500
    assert dash.client.post("/signin", data=b"\xff\xfe", content_type="application/x-www-form-urlencoded"
                            ).status_code < 500
    assert dash.store.jobs(states=(JobState.QUEUED,)) == []


def test_pages_carry_security_headers_and_the_stylesheet_is_served(dash):
    dash.sign_in()
    response = dash.client.get("/")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert dash.client.get("/static/dashboard.css").status_code == 200
    assert dash.client.get("/static/dashboard.js").status_code == 200
    assert dash.client.get("/healthz").get_json() == {"ok": True}  # the rest of the app is untouched


# -- a real browser against a real server and engine ------------------------------------------------------


def browser_problem() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (run scripts/ensure-tools.sh)"
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture
def chromium():
    problem = browser_problem()
    if problem is not None:
        unavailable(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.docker
def test_in_a_browser_sign_in_see_the_live_sha_roll_back_and_see_it_change(instance, chromium, tmp_path):
    from playwright.sync_api import expect

    instance.configure({"site": {}})
    first = instance.deploy("site", site_files("version one"), "First version")
    second = instance.deploy("site", site_files("version two"), "Second version")
    assert (first.state, second.state) == (JobState.SUCCEEDED, JobState.SUCCEEDED), (first.error, second.error)
    assert instance.get().release == second.sha[:12]
    port = int(instance.config.server.listen.rsplit(":", 1)[1])

    # The server runs without a worker, so the job page is seen queued first; a worker started
    # afterwards runs the job, and the open page must follow it to the end without being reloaded.
    with Server(instance.config_path, port, tmp_path / "serve.log"):
        page = chromium.new_page(viewport={"width": 900, "height": 720})
        page.set_default_timeout(30_000)
        base = f"http://127.0.0.1:{port}"
        page.goto(base + "/")
        expect(page).to_have_url(base + "/signin")
        page.fill("#token", tokens.create(SECRET, "deploy"))
        page.click("button:has-text('Sign in')")
        expect(page).to_have_url(base + "/")
        live = page.locator("#app-site .live-sha")
        expect(live).to_have_text(second.sha[:12])
        expect(page.locator("#app-site")).to_contain_text("Second version")

        page.click("#app-site button.rollback")
        expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
        expect(page.locator("#state")).to_have_text("queued")
        page.evaluate("window.notReloaded = true")
        worker = instance.worker_process()
        assert worker.returncode == 0, worker.stderr
        expect(page.locator("#state")).to_have_text("succeeded")
        expect(page.locator("#log")).to_contain_text("running (worker")
        expect(page.locator("#steps li").first).to_be_visible()
        assert page.evaluate("window.notReloaded") is True
        assert instance.get().release == first.sha[:12]

        page.goto(base + "/")
        expect(live).to_have_text(first.sha[:12])
        expect(page.locator("table.jobs tbody tr").first).to_contain_text("rollback")
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size < 300_000
        if os.environ.get("HOOKDEPLOY_UPDATE_SCREENSHOT") == "1" or not SCREENSHOT.exists():
            SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)

        page.set_viewport_size({"width": 375, "height": 740})  # a phone: nothing wider than the screen
        for path in ("/", page.locator("table.jobs tbody a").first.get_attribute("href")):
            page.goto(base + path)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), path
        page.screenshot(path=str(tmp_path / "phone.png"))
