"""The dashboard: signing in with a token, the session cookie and its flags, scopes, CSRF, no 500
on any input, the job page's step time line and traffic box, the app page's chart of jobs (Flask's
test client against a real git repo and SQLite store); then a real browser (Debian's chromium driven
by Playwright): the charts drawn under the page's CSP against `hookdeploy serve`, and against a real
Docker engine: sign in, see the live SHA, press rollback, watch the job, see the live SHA change.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from docker_helpers import site_files, unavailable
from hookdeploy.core import tokens
from hookdeploy.engine import traffic
from hookdeploy.web.sessions import COOKIE
from hookdeploy.core.models import JobKind, JobState, Trigger, parse_time
from webhook_helpers import API_SECRET as SECRET, ORIGIN, Server, release

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SCREENSHOT = Path(__file__).parent.parent / "docs" / "dashboard.png"  # rewritten with HOOKDEPLOY_UPDATE_SCREENSHOT=1


@pytest.fixture
def dash(web_app):
    """The web app (test client, store, SHAs) with two releases of `site`: shas[0], then shas[1] live."""
    release(web_app.store, "site", web_app.shas[0])
    release(web_app.store, "site", web_app.shas[1])
    web_app.client.environ_base["HTTP_ORIGIN"] = ORIGIN["Origin"]  # as a browser sends with each form
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
    token = dash.token("deploy")
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
    expiring = dash.token("deploy", ttl=1)
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


STEPS = (("checked out abc", 0.4, "checkout"), ("built hookdeploy/site:abc", 12.3, "build"),
         ("proxy ready", 0.01, "proxy"), ("started candidate <script>alert(1)</script>", 1.5, "candidate"),
         ("health check passed", 2.0, "health"), ("switched proxy", 0.2, "switch"),
         ("verified through the proxy in 0.3 s", 0.3, "verify"))


def ran(store, sha: str, steps=STEPS, state: JobState = JobState.SUCCEEDED):
    """A job of `site` that ran `steps` (message, seconds, step) back to back and ended in `state`."""
    job = store.enqueue("site", sha)
    assert store.claim("test", ["site"]).id == job.id
    for message, took, step in steps:
        store.log(job.id, message, kind="step", duration=took, step=step)
    store.log(job.id, "some output")
    finished = store.finish(job.id, state, None if state is JobState.SUCCEEDED else "it broke")
    back_to_back(store, finished.id, parse_time(finished.finished_at))
    return store.job(job.id)


def back_to_back(store, job_id: int, end: datetime) -> None:
    """Date the job's steps as if each began when the one before ended, the last ending 0.5 s before
    `end`, and the job as started when its first step did (the store dates them when logged)."""
    steps = [event for event in store.events(job_id) if event.kind == "step" and event.duration is not None]
    moment = end - timedelta(seconds=0.5 + sum(event.duration for event in steps))
    with store.transaction() as db:
        db.execute("UPDATE jobs SET started_at = ? WHERE id = ?", (iso(moment), job_id))
        for event in steps:
            moment += timedelta(seconds=event.duration)
            db.execute("UPDATE events SET at = ? WHERE id = ?", (iso(moment), event.id))


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def chart_in(page: str, chart: str) -> str:
    """The page's SVG chart of class `chart`."""
    found = re.search(rf'<svg [^>]*class="chart {chart}".*?</svg>', page, re.S)
    assert found, f"no {chart} chart on the page"
    return found.group(0)


def bar_classes(page: str, chart: str) -> list[str]:
    """The classes of the bars in the page's SVG chart of class `chart`."""
    return re.findall(r'<rect class="bar ([^"]+)"', chart_in(page, chart))


def test_job_page_draws_its_timed_steps_on_a_time_line(dash):
    dash.sign_in("read")
    job = ran(dash.store, dash.shas[2])
    dash.store.log(job.id, "live: site serves abc", kind="step")  # a step without a duration is not drawn
    page = dash.client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert bar_classes(page, "timeline") == ["step-checkout", "step-build", "step-proxy", "step-candidate",
                                             "step-health", "step-switch", "step-verify"]
    for label in ("checkout 0.40 s", "build 12.3 s", "proxy 0.01 s", "candidate 1.5 s", "health 2.0 s"):
        assert f">{label}</text>" in page
    assert chart_in(page, "timeline").count("<title>") == len(STEPS)
    assert "<script>alert" not in page and "started candidate &lt;script&gt;" in page
    assert ' style="' not in page  # the CSP would refuse it

    bare = dash.store.enqueue("site", dash.shas[1])
    page = dash.client.get(f"/jobs/{bare.id}").get_data(as_text=True)
    assert "<svg" not in page and 'id="steps"' in page


def test_job_page_shows_the_traffic_the_proxy_logged_for_its_release_and_never_fails_on_the_log(dash):
    dash.sign_in("read")
    job = ran(dash.store, dash.shas[2])
    path = traffic.log_path(dash.config, "site")
    assert "Traffic" not in dash.client.get(f"/jobs/{job.id}").get_data(as_text=True)  # no log yet

    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"time": 1.0, "status": 200, "release": dash.shas[2][:12]}] * 5 + \
            [{"time": 2.0, "status": 502, "release": dash.shas[2][:12]}] * 2 + \
            [{"time": 3.0, "status": 500, "release": dash.shas[1][:12]}] * 9 + \
            [{"time": 4.0, "status": 301, "release": ""}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "not json\n" + '{"time": 5, "sta')
    page = dash.client.get(f"/jobs/{job.id}").get_data(as_text=True)
    box = re.search(r'<section class="card traffic" id="traffic">.*?</section>', page, re.S).group(0)
    assert "<dt>Requests</dt><dd>7</dd>" in box and ">2 (29 %)</dd>" in box and dash.shas[2][:12] in box

    other = ran(dash.store, dash.shas[0])  # a release the log has nothing of
    assert 'id="traffic"' not in dash.client.get(f"/jobs/{other.id}").get_data(as_text=True)

    path.unlink()
    path.mkdir()  # unreadable as a file: the page shows no box, and still no 500
    response = dash.client.get(f"/jobs/{job.id}")
    assert response.status_code == 200 and 'id="traffic"' not in response.get_data(as_text=True)


def test_app_page_shows_the_live_release_and_its_jobs_by_outcome_linked_from_the_index(dash):
    dash.sign_in("read")
    index = dash.client.get("/").get_data(as_text=True)
    assert '<a href="/apps/site">site</a>' in index

    failed = ran(dash.store, dash.shas[2], state=JobState.FAILED)
    rolled = ran(dash.store, dash.shas[2], STEPS[:2], state=JobState.ROLLED_BACK)
    waiting = dash.store.enqueue("site", dash.shas[0])
    response = dash.client.get("/apps/site")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert dash.shas[1][:12] in page and "commit 1" in page  # the live release and its subject
    # release() made jobs 1 and 2 (succeeded), oldest on the left
    assert bar_classes(page, "history") == ["outcome-succeeded", "outcome-succeeded", "outcome-failed",
                                            "outcome-rolled_back", "outcome-queued"]
    for job in (failed, rolled, waiting):
        assert f'<a href="/jobs/{job.id}" class="job"><title>job {job.id} {job.sha[:7]}: {job.state.value}' in page
    assert ' style="' not in page

    assert "<svg" not in dash.client.get("/apps/lab").get_data(as_text=True)  # no jobs: no chart
    missing = dash.client.get("/apps/nope")
    assert missing.status_code == 404 and "no such app" in missing.get_data(as_text=True)
    dash.client.delete_cookie(COOKIE)
    assert dash.client.get("/apps/site").status_code == 303


def test_no_input_produces_a_500(dash):
    dash.sign_in()
    csrf = dash.csrf()
    gets = ["/jobs/999999", "/jobs/0", "/jobs/-1", "/jobs/1/events?after=-1", "/jobs/1/events?after=x",
            "/apps/nope", "/apps/%00", "/apps/..%2f", "/apps/" + "x" * 5000,
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


@pytest.mark.slow
def test_in_a_browser_the_charts_render_under_the_pages_csp(served, web_app, chromium, tmp_path):
    release(web_app.store, "site", web_app.shas[0])
    job = ran(web_app.store, web_app.shas[1], STEPS + (("guard: 0 of 3 requests failed", 300.0, "watch"),))
    ran(web_app.store, web_app.shas[2], STEPS[:3], state=JobState.ROLLED_BACK)

    with served.server(tmp_path / "serve.log"):
        page = chromium.new_page(viewport={"width": 900, "height": 900})
        page.set_default_timeout(15_000)
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text)
                if message.type == "error" and "/favicon.ico" not in message.location.get("url", "") else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("response", lambda response: problems.append(f"{response.status} {response.url}")
                if response.status >= 400 and not response.url.endswith("/favicon.ico") else None)
        page.add_init_script("window.violations = []; document.addEventListener('securitypolicyviolation', "
                             "(event) => window.violations.push(event.violatedDirective + ' ' + event.blockedURI))")
        base = f"http://127.0.0.1:{served.port}"
        page.goto(base + "/signin")
        page.fill("#token", web_app.token("read"))
        page.click("button:has-text('Sign in')")
        page.goto(f"{base}/jobs/{job.id}")

        bars = page.locator("svg.timeline rect.bar")
        assert bars.count() == len(STEPS) + 1
        boxes = [bars.nth(index).bounding_box() for index in range(bars.count())]
        assert all(box and box["width"] >= 1 and box["height"] >= 8 for box in boxes), boxes
        assert len({box["y"] for box in boxes}) == len(boxes)  # a row each
        label = page.locator("svg.timeline text.label").nth(1)
        assert label.text_content() == "build 12.3 s" and label.bounding_box()["width"] > 20
        fill = page.evaluate("getComputedStyle(document.querySelector('svg.timeline .step-build')).fill")
        assert fill not in ("", "none", "rgb(0, 0, 0)"), fill  # coloured by dashboard.css

        page.set_viewport_size({"width": 375, "height": 740})  # a phone: the chart shrinks, the page does not widen
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert all(bars.nth(index).bounding_box()["width"] >= 1 for index in range(bars.count()))

        page.click("h1 a:has-text('site')")
        page.wait_for_url(base + "/apps/site")
        history = page.locator("svg.history rect.bar")
        assert history.count() == 3
        assert all(history.nth(index).bounding_box()["height"] >= 2 for index in range(3))
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.locator("svg.history a").last.click()
        page.wait_for_url(re.compile(r"/jobs/\d+$"))
        assert page.locator("#state").text_content() == "rolled_back"
        assert page.evaluate("window.violations") == [] and problems == [], problems


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
        page.fill("#token", tokens.issue(SECRET, instance.store, "deploy"))
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
