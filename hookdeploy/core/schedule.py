"""Scheduled tasks' times: a task's cron expression in the [server] timezone, its slots before and
after a moment, and the zone itself.

The expressions are cronsim's (healthchecks.io's evaluator of Debian cron's rules, DST quirks
included); this module adds only the crontab(5) nicknames cronsim leaves out and the rule that a
schedule has exactly five fields (cronsim would also take a sixth, seconds). A slot is a moment:
an aware datetime, kept in the store as UTC text (slot_text), so two workers name it alike.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime, timedelta, timezone
from typing import Iterator

# cronsim is imported where a schedule is read, not here: the post-receive hook loads this module with
# deploy.toml inside every push and never needs it, and cronsim brings calendar and locale, about a
# sixth of what the hook imports.

# crontab(5)'s nicknames, as Debian's cron reads them.
NICKNAMES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *"}
_REFERENCE = datetime(2026, 1, 1, tzinfo=timezone.utc)


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone `name` (from the system's tzdata, else the tzdata package); ValueError if unknown."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{name!r} is not an IANA time zone name (like \"UTC\" or \"Europe/Berlin\")") from None


def zone_problem(name: str) -> str | None:
    """Why `name` is no IANA time zone, or None."""
    try:
        zone(name)
    except ValueError as error:
        return str(error)
    return None


def problem(expression: str) -> str | None:
    """Why `expression` is not a five-field cron expression or a nickname, or None."""
    text = NICKNAMES.get(expression.strip(), expression)
    if expression.strip().startswith("@") and expression.strip() not in NICKNAMES:
        return f"{expression!r}: the nicknames are {', '.join(NICKNAMES)}"
    if len(text.split()) != 5:
        return f"{expression!r} must have five fields (minute hour day-of-month month day-of-week) or be one of {', '.join(NICKNAMES)}"
    from cronsim import CronSim, CronSimError

    try:
        CronSim(text, _REFERENCE)
    except CronSimError as error:
        return f"{expression!r}: {str(error).lower()}"
    return None


class Schedule:
    """A valid cron expression (or nickname) in a zone."""

    def __init__(self, expression: str, zone_name: str = "UTC"):
        self.expression = expression
        self.zone = zone(zone_name)
        self._text = NICKNAMES.get(expression.strip(), expression)

    def latest(self, now: datetime) -> datetime | None:
        """The last slot at or before `now` (None if there was none in 50 years)."""
        return next(self.before(_minute(now) + timedelta(minutes=1)), None)

    def next_after(self, now: datetime) -> datetime | None:
        """The first slot after `now` (None if there is none in 50 years)."""
        from cronsim import CronSim

        return next(iter(CronSim(self._text, now.astimezone(self.zone))), None)

    def before(self, moment: datetime) -> Iterator[datetime]:
        """The slots strictly before `moment`, newest first."""
        from cronsim import CronSim

        return iter(CronSim(self._text, moment.astimezone(self.zone), reverse=True))


def slot_text(moment: datetime) -> str:
    """A slot as the store keeps it: UTC, as models.utcnow() writes times (2026-11-28T03:04:00.000Z)."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)
