"""Certification periods: calendar years (the default), half-years, quarters or months.

A period is named like ``2026``, ``2026-H2``, ``2026-Q3`` or ``2026-07``. A certification made
in a period is valid until the period ends. A subject's status in a period (certified, due,
overdue, failed, manual review) is derived by the ledger's query: see
:meth:`facegate.workflows.certification.ledger.CertificationLedger.statuses`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from facegate.vocab import PERIOD_KINDS

KINDS = PERIOD_KINDS
_MONTHS = {"year": 12, "half": 6, "quarter": 3, "month": 1}


@dataclass(frozen=True)
class Period:
    name: str
    start: datetime      # inclusive, UTC
    end: datetime        # exclusive, UTC

    def contains(self, t: datetime) -> bool:
        return self.start <= t < self.end


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    total = year * 12 + (month - 1) + n
    return total // 12, total % 12 + 1


def _make(kind: str, year: int, first_month: int) -> Period:
    ey, em = _add_months(year, first_month, _MONTHS[kind])
    start = datetime(year, first_month, 1, tzinfo=timezone.utc)
    end = datetime(ey, em, 1, tzinfo=timezone.utc)
    index = (first_month - 1) // _MONTHS[kind] + 1
    name = {"year": f"{year}", "half": f"{year}-H{index}", "quarter": f"{year}-Q{index}",
            "month": f"{year}-{first_month:02d}"}[kind]
    return Period(name, start, end)


def period_at(t: datetime, kind: str = "year") -> Period:
    """The period of ``kind`` that contains time ``t``."""
    if kind not in KINDS:
        raise ValueError(f"period kind must be one of {KINDS}")
    t = t.astimezone(timezone.utc) if t.tzinfo else t.replace(tzinfo=timezone.utc)
    span = _MONTHS[kind]
    first = ((t.month - 1) // span) * span + 1
    return _make(kind, t.year, first)


def parse_period(name: str) -> Period:
    """``2026`` | ``2026-H1`` | ``2026-Q3`` | ``2026-07`` -> Period."""
    m = re.fullmatch(r"(\d{4})(?:-(H[12]|Q[1-4]|\d{2}))?", name.strip())
    if not m:
        raise ValueError(f"not a period name: {name!r} (use 2026, 2026-H1, 2026-Q3 or 2026-07)")
    year, part = int(m.group(1)), m.group(2)
    if part is None:
        return _make("year", year, 1)
    if part[0] == "H":
        return _make("half", year, 1 + 6 * (int(part[1]) - 1))
    if part[0] == "Q":
        return _make("quarter", year, 1 + 3 * (int(part[1]) - 1))
    month = int(part)
    if not 1 <= month <= 12:
        raise ValueError(f"not a month: {name!r}")
    return _make("month", year, month)
