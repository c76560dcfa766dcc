"""Stop and start without Docker: the store's migration to the new job kinds, the stopped state, the
API routes (deploy scope), the `maintenance_page` key, and the maintenance server blocks nginx gets."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hookdeploy.core import config
from hookdeploy.core.errors import ConfigError
from hookdeploy.core.models import JobKind, JobState
from hookdeploy.core.schema import MIGRATIONS, SCHEMA_VERSION
from hookdeploy.core.store import Store
from hookdeploy.engine import maintenance

from conftest import fake_sha

SHA_A, SHA_B = fake_sha(0xA), fake_sha(0xB)


def test_migration_remakes_jobs_for_the_new_kinds_keeping_rows_ids_links_and_indexes(tmp_path: Path):
    path = tmp_path / "hookdeploy.db"
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA foreign_keys = ON")
    for script in MIGRATIONS[:7]:
        connection.executescript(script)
    connection.executescript(f"""
        INSERT INTO jobs (id, app, kind, trigger, sha, state, created_at, digest)
        VALUES (5, 'site', 'deploy', 'push', '{SHA_A}', 'succeeded', '2026-01-01T00:00:00.000Z', 'sha256:ab');
        INSERT INTO jobs (id, app, kind, trigger, sha, state, created_at, retry_of)
        VALUES (9, 'site', 'rollback', 'retry', '{SHA_B}', 'queued', '2026-01-02T00:00:00.000Z', 5);
        INSERT INTO events (job, at, kind, message, step) VALUES (5, '2026-01-01T00:00:00.000Z', 'step', 'built', 'build');
        INSERT INTO releases (app, sha, image, container, job, state, live_since)
        VALUES ('site', '{SHA_A}', 'i', 'c1', 5, 'live', '2026-01-01T00:00:09.000Z');
        INSERT INTO deliveries (app, delivery_id, provider, job, received_at) VALUES ('site', 'd1', 'github', 5, 'x');
        PRAGMA user_version = 7;
    """)
    connection.close()

    store = Store(path)
    assert store.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    old, retry = store.job(5), store.job(9)
    assert (old.kind, old.state, old.digest) == (JobKind.DEPLOY, JobState.SUCCEEDED, "sha256:ab")
    assert (retry.kind, retry.retry_of) == (JobKind.ROLLBACK, 5)
    assert [event.step for event in store.events(5)] == ["build"]
    assert store.live_release("site").job == 5
    indexes = {row[0] for row in store.query("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'")}
    assert {"one_running_job_per_app", "jobs_by_app", "jobs_by_state"} <= indexes
    assert store.query("PRAGMA foreign_keys")[0][0] == 1  # on again after the migration
    assert store.query("PRAGMA foreign_key_check") == []
    stop = store.enqueue("site", SHA_A, kind=JobKind.STOP, coalesce=False)
    assert (stop.id, stop.to_json()["kind"]) == (10, "stop")  # ids go on after the old ones
    assert store.enqueue("site", SHA_A, kind=JobKind.START, coalesce=False).kind is JobKind.START
    try:
        store.query("INSERT INTO jobs (app, kind, trigger, sha, state, created_at) "
                    f"VALUES ('site', 'explode', 'manual', '{SHA_A}', 'queued', 'x')")
    except sqlite3.IntegrityError:
        pass
    else:
        raise AssertionError("the kind CHECK is gone")


def test_stopped_lasts_until_a_start_or_a_new_live_release(tmp_path: Path):
    store = Store(tmp_path / "hookdeploy.db")
    first = store.enqueue("site", SHA_A)
    live = store.record_live("site", SHA_A, "i:a", "c-a", first.id)
    stop = store.enqueue("site", SHA_A, kind=JobKind.STOP, coalesce=False)
    store.set_stopped("site", live.id, stop.id)
    assert Store(tmp_path / "hookdeploy.db").stopped("site") == live  # durable, seen by another process's store
    store.set_started("site")
    assert store.stopped("site") is None
    store.set_stopped("site", live.id, stop.id)
    assert store.stopped_by("site") == stop.id
    second = store.enqueue("site", SHA_B)
    store.record_live("site", SHA_B, "i:b", "c-b", second.id)
    assert store.stopped("site") is None and store.stopped_by("site") is None


def test_the_guard_taking_back_a_push_to_a_stopped_app_stops_it_again_by_the_same_stop(tmp_path: Path):
    store = Store(tmp_path / "hookdeploy.db")
    live = store.record_live("site", SHA_A, "i:a", "c-a", store.enqueue("site", SHA_A).id)
    stop = store.enqueue("site", SHA_A, kind=JobKind.STOP, coalesce=False)
    store.set_stopped("site", live.id, stop.id)
    pushed = store.record_live("site", SHA_B, "i:b", "c-b", store.enqueue("site", SHA_B).id)
    assert store.stopped("site") is None  # the push started it
    store.undo_live("site", pushed.id, live.id, stopped_by=stop.id)
    assert store.live_release("site").id == live.id and store.stopped("site").id == live.id
    assert store.stopped_by("site") == stop.id
    # a push to a running app taken back: it runs on
    pushed = store.record_live("site", SHA_B, "i:b", "c-b", store.enqueue("site", SHA_B).id)
    store.undo_live("site", pushed.id, live.id)
    assert store.live_release("site").id == live.id and store.stopped("site") is None


def test_api_stop_and_start_need_deploy_scope_and_a_live_release(web_app, read_token, deploy_token):
    status, answer = web_app.call("POST", "/api/apps/site/stop", read_token)
    assert status == 403
    status, answer = web_app.call("POST", "/api/apps/site/stop", deploy_token)
    assert status == 400 and answer["error"] == "site has no live release to stop"
    sha = web_app.shas[0]
    job = web_app.store.enqueue("site", sha)
    web_app.store.record_live("site", sha, "i", "c", job.id)
    status, answer = web_app.call("POST", "/api/apps/site/start", deploy_token)
    assert status == 400 and "site is not stopped" in answer["error"]
    status, stop = web_app.call("POST", "/api/apps/site/stop", deploy_token)
    assert status == 202 and (stop["kind"], stop["sha"], stop["state"]) == ("stop", sha, "queued")
    status, answer = web_app.call("POST", "/api/apps/site/stop", deploy_token)
    assert status == 400 and f"(job {stop['id']})" in answer["error"]
    status, start = web_app.call("POST", "/api/apps/site/start", deploy_token)  # after the queued stop
    assert status == 202 and start["kind"] == "start"
    status, answer = web_app.call("POST", "/api/apps/nosuch/stop", deploy_token)
    assert status == 404
    status, answer = web_app.call("POST", "/api/apps/site/stop", deploy_token, {"force": "yes"})
    assert status == 400 and "unknown field" in answer["error"]
    status, apps = web_app.call("GET", "/api/apps", read_token)
    assert apps["apps"]["site"]["stopped"] is False


def test_maintenance_page_must_be_a_readable_file(write_config, tmp_path: Path):
    def problems(page: str) -> list[str]:
        try:
            config.load(write_config({"site": {"repo": "/srv/git/site.git", "maintenance_page": page}}))
        except ConfigError as error:
            return error.problems
        return []

    assert problems("missing.html") == [f"apps.site.maintenance_page: '{tmp_path / 'missing.html'}' is not a file"]
    assert problems(str(tmp_path)) == [f"apps.site.maintenance_page: '{tmp_path}' is not a file"]
    (tmp_path / "big.html").write_bytes(b"x" * (1 << 20 | 1))
    assert "more than 1048576" in problems("big.html")[0]
    (tmp_path / "page.html").write_text("<p>soon</p>")
    assert problems("page.html") == []
    assert config.load(write_config({"site": {"repo": "/srv/git/site.git", "maintenance_page": "page.html"}})
                       ).app("site").maintenance_page == str(tmp_path / "page.html")


def test_the_maintenance_blocks_keep_the_apps_names_and_answer_503_with_retry_after(write_config):
    loaded = config.load(write_config({"site": {"repo": "/srv/git/site.git", "hostnames": ["a.example", "b.example"]}}))
    text = maintenance.render(loaded, loaded.app("site"), SHA_A)
    assert "server_name a.example b.example;" in text and "return 503;" in text
    assert f"error_page 503 {maintenance.PAGE_URI};" in text and "add_header Retry-After 300 always;" in text
    assert "location ^~ /.well-known/acme-challenge/" in text  # certificates still renew while stopped
    assert "proxy_pass" not in text and maintenance.is_page_route(text)


def test_dashboard_stop_and_start_buttons_queue_jobs_for_deploy_scope_only(web_app):
    from webhook_helpers import ORIGIN, release

    release(web_app.store, "site", web_app.shas[0])
    web_app.client.environ_base["HTTP_ORIGIN"] = ORIGIN["Origin"]
    web_app.sign_in("read")
    page = web_app.client.get("/").get_data(as_text=True)
    assert "/apps/site/stop" not in page
    assert web_app.client.post("/apps/site/stop", data={"csrf": web_app.csrf()}).status_code == 403

    web_app.sign_in()
    page = web_app.client.get("/").get_data(as_text=True)
    assert 'action="/apps/site/stop"' in page and ">Stop</button>" in page
    response = web_app.client.post("/apps/site/stop", data={"csrf": web_app.csrf()})
    assert response.status_code == 303
    stop = web_app.store.job(int(response.headers["Location"].rsplit("/", 1)[1]))
    assert (stop.kind, stop.sha, stop.state) == (JobKind.STOP, web_app.shas[0], JobState.QUEUED)
    web_app.store.set_stopped("site", web_app.store.live_release("site").id, stop.id)  # as the worker would
    page = web_app.client.get("/").get_data(as_text=True)
    assert 'action="/apps/site/start"' in page and "stopped: the maintenance page answers" in page
    response = web_app.client.post("/apps/site/start", data={"csrf": web_app.csrf()})
    assert response.status_code == 303
    assert web_app.store.jobs("site", limit=1)[0].kind is JobKind.START
