"""charts.py's SVG, as pure functions: where a step's bar goes on the time line (it ends at its
event's time), the minimum width, the axis, escaping of text from outside, nothing drawn for no
data; an app's jobs by duration and outcome. The pages that show them are in test_dashboard.py.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from hookdeploy.core.models import Event, Job, JobKind, JobState, Trigger
from hookdeploy.web import charts

START = datetime(2026, 11, 28, 3, 0, 0, tzinfo=timezone.utc)


def at(seconds: float) -> str:
    """The time `seconds` after START, as the store writes times."""
    return (START + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def step(number: int, ends: float, took: float | None, message: str = "built image", kind: str = "step",
         name: str | None = "build") -> Event:
    """A step event recorded `ends` seconds after START, for the step `name` that took `took`."""
    return Event(id=number, job=1, at=at(ends), kind=kind, message=message, duration=took,
                 step=name if kind == "step" else None)


def job(number: int = 1, state: JobState = JobState.SUCCEEDED, took: float | None = 10.0,
        kind: JobKind = JobKind.DEPLOY) -> Job:
    """A job that started at START and ran `took` seconds (None: never started)."""
    return Job(id=number, app="site", kind=kind, trigger=Trigger.PUSH, ref=None, sha=f"{number:040x}", state=state,
               created_at=at(0), started_at=at(0) if took is not None else None,
               finished_at=at(took) if took is not None else None, error=None, image=None)


def bars(svg: str) -> list[dict[str, str]]:
    """The attributes of each bar in an SVG."""
    return [dict(re.findall(r'([\w-]+)="([^"]*)"', found))
            for found in re.findall(r'<rect ([^>]*class="bar [^>]*)/>', svg)]


def percent(text: str) -> float:
    assert text.endswith("%"), text
    return float(text[:-1])


# -- a job's steps ----------------------------------------------------------------------------------


def test_a_step_starts_its_duration_before_its_event_counted_from_the_job_start():
    events = [step(1, 5.0, 5.0, "checked out abc", name="checkout"), step(2, 17.3, 12.3, "built image"),
              step(3, 20.0, 1.5, "switched proxy", name="switch")]
    spans = charts.step_spans(events, at(0))
    assert [(span.label, span.start, span.duration) for span in spans] == [
        ("checkout", pytest.approx(0.0, abs=1e-3), 5.0), ("build", pytest.approx(5.0, abs=1e-3), 12.3),
        ("switch", pytest.approx(18.5, abs=1e-3), 1.5)]

    svg = str(charts.step_timeline(job(took=20.0), events))
    drawn = bars(svg)
    assert len(drawn) == 3
    assert [percent(bar["x"]) for bar in drawn] == pytest.approx([0.0, 25.0, 92.5], abs=0.01)
    assert [percent(bar["width"]) for bar in drawn] == pytest.approx([25.0, 61.5, 7.5], abs=0.01)
    assert "checkout 5.0 s" in svg and "build 12.3 s" in svg and "switch 1.5 s" in svg


def test_the_origin_is_the_job_start_or_an_earlier_step_and_the_axis_spans_the_whole_job():
    late = charts.step_spans([step(1, 30.0, 10.0)], at(0))
    assert late[0].start == pytest.approx(20.0, abs=1e-3)  # the job waited 20 s before this step
    early = charts.step_spans([step(1, 2.0, 4.0)], at(0))  # begun before the job's recorded start
    assert early[0].start == 0.0
    no_start = charts.step_spans([step(1, 30.0, 10.0), step(2, 35.0, 5.0)])
    assert [span.start for span in no_start] == pytest.approx([0.0, 10.0], abs=1e-3)

    # A finished job's axis runs to its end: a 10 s step of a 40 s job fills a quarter.
    [bar] = bars(str(charts.step_timeline(job(took=40.0), [step(1, 10.0, 10.0)])))
    assert percent(bar["width"]) == pytest.approx(25.0, abs=0.01)


def test_a_hundredth_of_a_second_beside_five_minutes_keeps_the_minimum_width():
    events = [step(1, 0.01, 0.01, "pruned", name="prune"),
              step(2, 300.01, 300.0, "guard: 0 of 40 requests failed", name="watch")]
    svg = str(charts.step_timeline(job(took=None), events))
    short, long = bars(svg)
    assert percent(short["width"]) == charts.MIN_WIDTH
    assert percent(long["width"]) == pytest.approx(100 * 300 / 300.01, abs=0.01)
    assert "prune 0.01 s" in svg and "watch 5 min 00 s" in svg

    # A bar widened to the minimum at the very end is moved left to stay inside the chart.
    start, width = charts.bar_box(charts.StepSpan("prune", "pruned", 300.0, 0.0), 300.0)
    assert (start, width) == (100 - charts.MIN_WIDTH, charts.MIN_WIDTH)


def test_one_step_and_fifteen_steps_each_get_a_row_a_label_and_a_tooltip():
    [one] = bars(str(charts.step_timeline(job(took=None), [step(1, 3.0, 3.0)])))
    assert percent(one["x"]) == 0.0 and percent(one["width"]) == 100.0

    messages = [f"step number {number}" for number in range(15)]
    events = [step(number, 2.0 * (number + 1), 2.0, message, name=None) for number, message in enumerate(messages)]
    svg = str(charts.step_timeline(job(took=30.0), events))
    drawn = bars(svg)
    assert len(drawn) == 15 and len({bar["y"] for bar in drawn}) == 15  # a row each
    assert re.search(r'<svg [^>]*height="(\d+)"', svg).group(1) == str(15 * charts.ROW + charts.AXIS)
    assert svg.count("<title>") == 15 and all(f"<title>{message}\n2.0 s" in svg for message in messages)
    assert svg.count('class="label"') == 15 and svg.count("other 2.0 s") == 15
    # labels of bars in the right half end at the bar's end, so they stay inside the chart
    assert 'text-anchor="end"' in svg and 'text-anchor="start"' in svg


def test_text_from_outside_is_escaped():
    hostile = 'built <script>alert(1)</script> & "quoted" <rect class="bar"/>'
    svg = str(charts.step_timeline(job(), [step(1, 5.0, 5.0, hostile)]))
    assert "<script>" not in svg and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;quoted&#34;" in svg
    assert len(bars(svg)) == 1  # the message's <rect> is text, not a bar


def test_no_timed_steps_draw_no_chart():
    assert charts.step_timeline(job(), []) is None
    untimed = [step(1, 1.0, None, "live: site serves abc"), step(2, 2.0, 1.0, "output", kind="log")]
    assert charts.step_timeline(job(), untimed) is None
    assert charts.step_spans(untimed) == []


def test_axis_ticks_are_round_and_leave_room_for_their_labels():
    assert charts.ticks(17.3) == [0, 5, 10, 15]
    assert charts.ticks(318) == [0, 120, 240]
    assert charts.ticks(0.04) == [0, 0.01, 0.02, 0.03]
    assert charts.ticks(20_000) == [0, 7200, 14400]
    assert charts.ticks(0.001) == [0]
    assert [charts.axis_seconds(value) for value in (0, 0.05, 15, 120, 90)] == ["0 s", "0.05 s", "15 s", "2 min",
                                                                                "1 min 30 s"]


# -- an app's jobs ------------------------------------------------------------------------------------


def test_each_job_is_a_linked_bar_as_high_as_it_took_coloured_by_outcome_oldest_left():
    jobs = [job(1, JobState.SUCCEEDED, 40.0), job(2, JobState.FAILED, 10.0), job(3, JobState.SUPERSEDED, None),
            job(4, JobState.ROLLED_BACK, 20.0, JobKind.ROLLBACK), job(5, JobState.INTERRUPTED, 0.0)]
    svg = str(charts.job_history(jobs, lambda found: f"/jobs/{found.id}"))
    drawn = bars(svg)
    assert [bar["class"] for bar in drawn] == ["bar outcome-succeeded", "bar outcome-failed", "bar outcome-superseded",
                                               "bar outcome-rolled_back", "bar outcome-interrupted"]
    assert [percent(bar["x"]) for bar in drawn] == sorted(percent(bar["x"]) for bar in drawn)
    heights = [float(bar["height"]) for bar in drawn]
    assert heights == [charts.HISTORY_PLOT, charts.HISTORY_PLOT / 4, charts.MIN_HEIGHT, charts.HISTORY_PLOT / 2,
                       charts.MIN_HEIGHT]
    bottoms = {float(bar["y"]) + float(bar["height"]) for bar in drawn}
    assert bottoms == {charts.HISTORY_TOP + charts.HISTORY_PLOT}  # every bar stands on the axis
    assert re.findall(r'<a href="([^"]+)"', svg) == [f"/jobs/{number}" for number in range(1, 6)]
    assert f"<title>job 1 {jobs[0].sha[:7]}: succeeded in 40 s</title>" in svg
    assert f"<title>job 3 {jobs[2].sha[:7]}: superseded</title>" in svg
    assert f"<title>job 4 {jobs[3].sha[:7]} (rollback): rolled_back in 20 s</title>" in svg
    assert "longest: 40 s" in svg


def test_only_the_last_thirty_jobs_are_drawn_and_hrefs_are_escaped():
    jobs = [job(number, took=float(number)) for number in range(1, 41)]
    svg = str(charts.job_history(jobs, lambda found: f'/jobs/{found.id}?a=1&b="2"'))
    assert len(bars(svg)) == charts.SLOTS
    assert "<title>job 11 " in svg and "<title>job 10 " not in svg
    assert '&amp;b=&#34;2&#34;' in svg and '&b="2"' not in svg


def test_no_jobs_draw_no_chart_and_jobs_that_never_ran_are_stubs():
    assert charts.job_history([], str) is None
    svg = str(charts.job_history([job(1, JobState.QUEUED, None)], str))
    [bar] = bars(svg)
    assert float(bar["height"]) == charts.MIN_HEIGHT and "no job ran yet" in svg
