"""The dashboard's app cards in a real browser (Debian's chromium via Playwright): every control
stays inside its card at the widths people use (issue 23, item 6: Replay overflowed at 1200 px)."""

from __future__ import annotations

import pytest

from test_dashboard import chromium  # noqa: F401 - a fixture
from webhook_helpers import release

WIDTHS = (375, 800, 1000, 1200, 1440, 1920)


@pytest.mark.slow
def test_every_button_and_field_stays_inside_its_card(served, web_app, chromium, tmp_path):  # noqa: F811
    release(web_app.store, "site", web_app.shas[0])
    release(web_app.store, "site", web_app.shas[1])  # an earlier release: the Roll back button shows
    with served.server(tmp_path / "serve.log"):
        page = chromium.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(15_000)
        base = f"http://127.0.0.1:{served.port}"
        page.goto(base + "/signin")
        page.fill("#token", web_app.token("deploy"))
        page.click("button:has-text('Sign in')")
        page.wait_for_url(base + "/")
        assert page.locator("section.card.app button").count() >= 2, "Roll back and Replay are shown"
        outside = {}
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            page.screenshot(path=str(tmp_path / f"index-{width}.png"))
            # Every control's right edge within its card's content box (what a user sees as sticking out).
            found = page.evaluate("""() => [...document.querySelectorAll('section.card.app')].flatMap(card => {
                const box = card.getBoundingClientRect();
                const right = box.right - parseFloat(getComputedStyle(card).paddingRight) + 0.5;
                return [...card.querySelectorAll('button, input:not([type=hidden])')]
                    .filter(control => control.getBoundingClientRect().right > right)
                    .map(control => `${control.textContent || control.name}: ${control.getBoundingClientRect().right}`
                                    + ` > ${right}`);
            })""")
            if found:
                outside[width] = found
        assert outside == {}, outside
