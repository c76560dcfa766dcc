"""The dashboard's pictures, drawn on the server as inline SVG: a job's steps on a time line (the job
page) and an app's recent jobs by duration and outcome (the app page).

The page's CSP allows no script and no style attribute, so a chart is SVG elements whose positions
are attributes and whose colours are classes in dashboard.css. Horizontal positions are percentages
of the chart's width: the chart fills a phone or a wide screen while its text keeps the page's size.
Every text from outside (step messages, anything in a job) is escaped here; what a function returns
is Markup the template puts in as is, or None when there is nothing to draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from markupsafe import Markup

from hookdeploy.core.models import Event, Job, JobKind, parse_time
from hookdeploy.web.display import duration, format_seconds, format_step_seconds

ROW = 30  # px per step: its label, then its bar
BAR = 10  # px, the height of a step's bar
AXIS = 24  # px below the steps for the time axis
MIN_WIDTH = 0.5  # % of the chart: a 0.01 s step beside a 300 s one stays a visible sliver
ANCHOR_END_AFTER = 50  # %: a label for a bar starting further right ends at the bar's end instead
NICE_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
MAX_TICKS = 5

SLOTS = 30  # jobs in the app chart: one slot each, oldest left, filled from the left
HISTORY_TOP = 18  # px above the bars for the longest duration's label
HISTORY_PLOT = 100  # px: the longest job's bar
MIN_HEIGHT = 3  # px: a job that never ran (superseded, queued) still shows as a stub


@dataclass(frozen=True)
class StepSpan:
    """One timed step of a job, in seconds after the job started."""

    label: str  # the event's step (engine/deploy.py STEPS): build, switch, ... or other
    message: str
    start: float
    duration: float

    @property
    def end(self) -> float:
        return self.start + self.duration


# -- a job's steps ----------------------------------------------------------------------------------


def step_spans(events: Iterable[Event], started_at: str | None = None) -> list[StepSpan]:
    """The step events with a duration, placed from the job's start. A step is recorded when it
    ends, so it began `duration` before its event; the origin is the job's start, or the first
    step's when that is earlier (or the job has no start time)."""
    timed = [(parse_time(event.at).timestamp() - event.duration, event) for event in events
             if event.kind == "step" and event.duration is not None]
    if not timed:
        return []
    origin = min(start for start, _ in timed)
    if started_at:
        origin = min(origin, parse_time(started_at).timestamp())
    return [StepSpan(event.step or "other", event.message, start - origin, max(0.0, event.duration))
            for start, event in timed]


def step_timeline(job: Job, events: Iterable[Event]) -> Markup | None:
    """The job's timed steps as an SVG time line (one row per step); None when it has none."""
    spans = step_spans(events, job.started_at)
    if not spans:
        return None
    total = max(span.end for span in spans)
    if job.started_at and job.finished_at:
        total = max(total, (parse_time(job.finished_at) - parse_time(job.started_at)).total_seconds())
    total = max(total, 0.001)
    rows = Markup("").join(_step_row(index, span, total) for index, span in enumerate(spans))
    height = len(spans) * ROW + AXIS
    return _tag("svg", _time_axis(total, len(spans) * ROW) + rows, xmlns="http://www.w3.org/2000/svg",
                class_="chart timeline", width="100%", height=height, role="img",
                aria_label=f"The {len(spans)} timed steps of job {job.id} on a time line")


def bar_box(span: StepSpan, total: float) -> tuple[float, float]:
    """Where a step's bar starts and how wide it is, in % of the chart (at least MIN_WIDTH wide)."""
    width = max(MIN_WIDTH, 100 * span.duration / total)
    start = min(100 * span.start / total, 100 - width)
    return start, width


def _step_row(index: int, span: StepSpan, total: float) -> Markup:
    start, width = bar_box(span, total)
    top = index * ROW
    took = format_step_seconds(span.duration)
    anchor_end = start > ANCHOR_END_AFTER
    label = _tag("text", f"{span.label} {took}", class_="label", x=_percent(start + width if anchor_end else start),
                 y=top + 12, text_anchor="end" if anchor_end else "start")
    bar = _tag("rect", class_=f"bar step-{span.label}", x=_percent(start), y=top + 16, width=_percent(width),
               height=BAR, rx=2)
    title = _tag("title", f"{span.message}\n{took}, from {format_step_seconds(span.start)} to "
                          f"{format_step_seconds(span.end)} after the job started")
    return _tag("g", title + bar + label, class_="step")


def _time_axis(total: float, top: int) -> Markup:
    parts = [_tag("line", class_="axis", x1="0%", x2="100%", y1=top + 2, y2=top + 2)]
    for tick in ticks(total):
        position = 100 * tick / total
        if tick:
            parts.append(_tag("line", class_="grid", x1=_percent(position), x2=_percent(position), y1=0, y2=top + 2))
        parts.append(_tag("text", axis_seconds(tick), class_="tick", x=_percent(position), y=top + 18,
                          text_anchor="start" if tick == 0 else "middle"))
    return Markup("").join(parts)


def ticks(total: float) -> list[float]:
    """Round times from 0 for the axis, at most MAX_TICKS, none too near the right edge for its label."""
    step = next((step for step in NICE_STEPS if total / step <= MAX_TICKS - 1), None)
    if step is None:
        step = 3600 * -(-total // (3600 * (MAX_TICKS - 1)))
    count = int(total / step + 1e-9) + 1
    return [round(step * index, 6) for index in range(count) if step * index <= 0.88 * total]


def axis_seconds(value: float) -> str:
    """A round time on the axis: `0 s`, `0.05 s`, `15 s`, `2 min`, `1 min 30 s`."""
    if value < 60:
        return f"{value:g} s"
    if value % 60 == 0:
        return f"{value / 60:g} min"
    return format_seconds(value)


# -- an app's jobs ------------------------------------------------------------------------------------


def job_history(jobs: list[Job], href: Callable[[Job], str]) -> Markup | None:
    """The app's jobs (oldest first, the last SLOTS of them) as SVG bars: height for how long each
    took, colour for how it ended, each a link to its page (`href`). None when there are none."""
    jobs = jobs[-SLOTS:]
    if not jobs:
        return None
    took = [duration(job) for job in jobs]
    longest = max((seconds for seconds in took if seconds is not None), default=0.0)
    bars = Markup("").join(_job_bar(index, job, seconds, longest, href(job))
                           for index, (job, seconds) in enumerate(zip(jobs, took)))
    bottom = HISTORY_TOP + HISTORY_PLOT
    scale = Markup("").join((
        _tag("text", f"longest: {format_seconds(longest)}" if longest else "no job ran yet", class_="tick",
             x="0%", y=12),
        _tag("line", class_="grid", x1="0%", x2="100%", y1=HISTORY_TOP, y2=HISTORY_TOP),
        _tag("line", class_="axis", x1="0%", x2="100%", y1=bottom, y2=bottom)))
    return _tag("svg", scale + bars, xmlns="http://www.w3.org/2000/svg", class_="chart history", width="100%",
                height=bottom + 2, role="img",
                aria_label=f"The app's last {len(jobs)} job{'s' if len(jobs) != 1 else ''}, oldest first, by duration")


def job_bar_height(seconds: float | None, longest: float) -> float:
    """A job's bar height in px: its share of the longest job's, at least MIN_HEIGHT."""
    if not seconds or not longest:
        return MIN_HEIGHT
    return max(MIN_HEIGHT, HISTORY_PLOT * seconds / longest)


def job_title(job: Job, seconds: float | None) -> str:
    """`job 12 abc1234: succeeded in 14 s` (no time for a job that never started)."""
    took = f" in {format_seconds(seconds)}" if seconds is not None else ""
    kind = "" if job.kind is JobKind.DEPLOY else f" ({job.kind.value})"
    return f"job {job.id} {job.sha[:7]}{kind}: {job.state.value}{took}"


def _job_bar(index: int, job: Job, seconds: float | None, longest: float, href: str) -> Markup:
    slot = 100 / SLOTS
    height = job_bar_height(seconds, longest)
    bottom = HISTORY_TOP + HISTORY_PLOT
    # the whole slot answers the pointer: a stub of a few pixels would be hard to hit
    hit = _tag("rect", class_="hit", x=_percent(index * slot), y=0, width=_percent(slot), height=bottom,
               fill="none", pointer_events="all")
    bar = _tag("rect", class_=f"bar outcome-{job.state.value}", x=_percent((index + 0.15) * slot),
               y=f"{bottom - height:.1f}", width=_percent(0.7 * slot), height=f"{height:.1f}", rx=1)
    return _tag("a", _tag("title", job_title(job, seconds)) + hit + bar, href=href, class_="job")


# -- SVG text -------------------------------------------------------------------------------------------


def _tag(name: str, content: str | Markup = "", **attributes: object) -> Markup:
    """An element; attribute values and str content are escaped, Markup content goes in as is.
    Attribute names are Python-safe: `class_` is class, `text_anchor` is text-anchor."""
    pairs = Markup("").join(Markup(' {}="{}"').format(Markup(key.rstrip("_").replace("_", "-")), value)
                            for key, value in attributes.items())
    if not content:
        return Markup("<{}{}/>").format(Markup(name), pairs)
    return Markup("<{0}{1}>{2}</{0}>").format(Markup(name), pairs, content)


def _percent(value: float) -> str:
    return f"{value:.2f}%"
