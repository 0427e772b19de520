"""The series names the MERC services can export, from their metric definitions
(merc.runtime.monitoring), and the names a PromQL expression uses: what keeps the Grafana dashboard
(tests/unit/test_monitoring.py) and the chart's alerts (tests/deploy/test_chart.py) honest."""

from __future__ import annotations

import re

from prometheus_client.metrics import MetricWrapperBase

from merc.runtime import monitoring

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported() -> set[str]:
    """Every series name a MERC /metrics can hold (a counter's _total, a histogram's _bucket/_count/_sum)."""
    names = set()
    for value in vars(monitoring).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names |= {family.name + s for s in _SUFFIXES[family.type]}
    return names


def used(expr: str) -> set[str]:
    """The merc_* names a PromQL expression reads."""
    return set(re.findall(r"\bmerc_[a-z0-9_]+", expr))


def family(name: str) -> str:
    return re.sub(r"_(total|bucket|count|sum)$", "", name)
