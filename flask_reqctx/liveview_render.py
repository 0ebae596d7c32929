"""HTML and SVG of the live view, drawn on the server: no script, no external asset.

Every value shown comes from the trace data (:func:`flask_reqctx.tracing.live`/``finished``)
and is escaped.  Elements carry ``data-*`` attributes (request id, execution id, kind,
outcome) so that tests and scrapers can read the page without parsing text.
"""

from __future__ import annotations

import json
import os
from html import escape
from typing import Any
from urllib.parse import quote

from .chrometrace import unit_title

__all__: list[str] = []  # internal: drawn for the live view

#: Lanes drawn per timeline; the rest are counted under it.
MAX_LANES = 60
WIDTH, LABEL_W, LANE_H, AXIS_H = 980, 380, 18, 22
COLOURS = {
    "returned": "#2e9d5b",
    "raised": "#d2392f",
    "killed": "#e58a00",
    "never started": "#9a9a9a",
    "ended": "#4f7fc4",
    "collected": "#6d6d6d",
    "alive": "#9b4dca",
}

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.2em 0 .4em;border-bottom:1px solid #ccc}
h3{font-size:1em;margin:.8em 0 .3em;font-weight:600}code{font:12px ui-monospace,monospace}
.meta{color:#555}.flag{border-radius:3px;padding:0 .4em;margin-left:.4em;font-size:12px;color:#fff}
.flag.leak{background:#d2392f}.flag.outlived{background:#9b4dca}
.context,.request{background:#fff;border:1px solid #ddd;border-radius:4px;
padding:.3em .7em .6em;margin:.5em 0}
.context.leak{border-color:#d2392f}table{border-collapse:collapse;font-size:13px}
td,th{padding:1px 10px 1px 0;text-align:left;vertical-align:top}th{color:#666;font-weight:500}
svg{display:block;margin-top:.3em}svg text{font:11px ui-monospace,monospace;fill:#333}
.legend span{display:inline-block;margin-right:1em}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
details pre{font-size:12px;background:#f3f3f3;padding:.4em;overflow:auto}
"""


def duration(ms: float | None) -> str:
    if ms is None:
        return "?"
    if ms == 0:
        return "0"
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{ms / 1000:.2f} s"


def short_site(site: str | None) -> str:
    """``dir/file.py:12`` of a ``/long/path/dir/file.py:12`` site (the full one is in the title)."""
    if not site:
        return ""
    parts = site.replace(os.sep, "/").rsplit("/", 2)
    return "/".join(parts[-2:])


def _tick_step(span_ms: float) -> float:
    step = float(10 ** len(str(int(max(span_ms, 1) / 5))))  # a power of ten above a fifth of the span
    for candidate in (step / 10, step / 5, step / 2, step):
        if span_ms / candidate <= 6:
            return candidate
    return step


def timeline(trace: dict[str, Any]) -> str:
    """One SVG lane per recorded unit (at most :data:`MAX_LANES`) on a shared time axis."""
    units = trace["units"]
    now = trace.get("age_ms")
    ends = [u["end_ms"] if u["end_ms"] is not None else (now or u["start_ms"]) for u in units]
    span = max([*ends, 0.001])
    scale = (WIDTH - LABEL_W - 10) / span
    shown = units[:MAX_LANES]
    height = AXIS_H + LANE_H * len(shown) + 4
    out = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'data-request-id="{escape(trace["request_id"])}" role="img">'
    ]
    step = _tick_step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        x = LABEL_W + tick * scale
        out.append(
            f'<line x1="{x:.1f}" y1="{AXIS_H - 4}" x2="{x:.1f}" y2="{height}" stroke="#e4e4e4"/>'
            f'<text x="{x:.1f}" y="{AXIS_H - 8}" text-anchor="middle">{escape(duration(tick))}</text>'
        )
        tick += step
    for lane, (unit, end) in enumerate(zip(shown, ends, strict=False)):
        y = AXIS_H + lane * LANE_H
        x = LABEL_W + unit["start_ms"] * scale
        w = max((end - unit["start_ms"]) * scale, 1.5)
        outcome = unit["outcome"]
        tip = f"eid {unit['eid']} (trigger {unit['trigger']}) {unit_title(unit)}: {outcome}"
        if unit.get("error"):
            tip += f" {unit['error']}"
        tip += f", {duration(unit['start_ms'])} → " + (duration(unit["end_ms"]) if unit["end_ms"] else "now")
        out.append(
            f'<g class="lane" data-eid="{unit["eid"]}" data-kind="{escape(unit["kind"])}" '
            f'data-outcome="{escape(outcome)}"><title>{escape(tip)}</title>'
            f'<text x="4" y="{y + 13}">{escape(unit_title(unit)[:56])}</text>'
            f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{LANE_H - 6}" rx="2" '
            f'fill="{COLOURS.get(outcome, "#444")}"/></g>'
        )
    out.append("</svg>")
    hidden = len(units) - len(shown) + trace.get("dropped", 0)
    if hidden:
        out.append(f'<p class="meta">{hidden} more units not drawn (see the JSON)</p>')
    return "".join(out)


def _heading(trace: dict[str, Any]) -> str:
    parts = [f"<code>{escape(trace['request_id'])}</code>"]
    if trace.get("method"):
        parts.append(escape(f"{trace['method']} {trace.get('path') or ''}"))
    if trace.get("status") is not None:
        parts.append(f"→ {trace['status']}")
    return " ".join(parts)


def _data_block(trace: dict[str, Any]) -> str:
    if trace.get("data") is None:
        return ""
    text = json.dumps({"trace_id": trace.get("trace_id"), "data": trace["data"]}, indent=1, sort_keys=True)
    return f"<details><summary>context data</summary><pre>{escape(text)}</pre></details>"


def live_context(trace: dict[str, Any], leak_after_s: float) -> str:
    alive = [u for u in trace["units"] if u["end_ms"] is None]
    root_ended = bool(trace["units"]) and trace["units"][0]["end_ms"] is not None
    flags = ""
    if trace.get("probable_leak"):
        flags += f'<span class="flag leak">probable leak (older than {duration(leak_after_s * 1000)})</span>'
    if root_ended:
        flags += '<span class="flag outlived">its request has ended; units still alive</span>'
    rows = "".join(
        f'<tr class="unit" data-eid="{u["eid"]}" data-kind="{escape(u["kind"])}">'
        f"<td>{u['eid']}</td><td>{escape(u['kind'])}</td><td>{escape(u.get('label') or '')}</td>"
        f'<td class="site" title="{escape(u.get("site") or "")}">{escape(short_site(u.get("site")))}'
        f"{' in ' + escape(u['function']) if u.get('function') else ''}</td>"
        f'<td class="age">{escape(duration(trace["age_ms"] - u["start_ms"]))}</td>'
        f"<td>{u['trigger']}</td></tr>"
        for u in alive
    )
    leak = " leak" if trace.get("probable_leak") else ""
    return (
        f'<div class="context{leak}" data-request-id="{escape(trace["request_id"])}" '
        f'data-probable-leak="{str(bool(trace.get("probable_leak"))).lower()}">'
        f'<h3>{_heading(trace)} · age <span class="context-age">{escape(duration(trace["age_ms"]))}</span>'
        f"{flags}</h3>"
        f'<table class="units"><tr><th>eid</th><th>kind</th><th>runs</th><th>created at</th><th>age</th>'
        f"<th>trigger</th></tr>{rows}</table>"
        f'<p class="meta">{len(alive)} of {len(trace["units"])} recorded units alive</p>'
        f"{timeline(trace)}{_data_block(trace)}</div>"
    )


def finished_request(trace: dict[str, Any]) -> str:
    children = len(trace["units"]) - 1 + trace.get("dropped", 0)
    return (
        f'<div class="request" data-request-id="{escape(trace["request_id"])}">'
        f"<h3>{_heading(trace)} · {escape(duration(trace['duration_ms']))} · {children} child units</h3>"
        f"{timeline(trace)}{_data_block(trace)}</div>"
    )


def _shown(shown: int, total: int) -> str:
    return str(total) if shown >= total else f"the oldest {shown} of {total}: ?live=N shows more"


def render_page(data: dict[str, Any], *, refresh: float | None, token: str | None) -> str:
    """The page for ``data``: the live view's head (``live_count``, ``finished_count``, stats)
    and the ``live`` and ``finished`` traces it chose to show, all drawn."""
    query = f"?token={quote(token)}" if token else ""
    live, done = data["live"], data["finished"]
    stats = data["stats"]
    legend = "".join(f'<span><i style="background:{c}"></i>{escape(k)}</span>' for k, c in COLOURS.items())
    head = '<meta charset="utf-8"><title>flask-reqctx live view</title>'
    if refresh is not None and refresh > 0:
        head += f'<meta http-equiv="refresh" content="{max(refresh, 0.5):g}">'
    body = [
        "<h1>flask-reqctx · live view</h1>",
        f'<p class="meta">worker pid {data["pid"]} · units live {stats["live"]}, created {stats["created"]}, '
        f'destroyed {stats["destroyed"]} · <a href="json{escape(query)}">JSON</a> · '
        f'<a href="chrome-trace.json{escape(query)}">Chrome trace (Perfetto)</a></p>',
        f'<p class="legend">{legend}</p>',
        f'<section id="live"><h2>Live contexts ({_shown(len(live), data["live_count"])})</h2>',
        *(live_context(t, data["leak_after_s"]) for t in live),  # oldest first
        "" if live else '<p class="meta">none</p>',
        f'</section><section id="finished"><h2>Last finished requests ({len(done)} of '
        f'{data["finished_count"]} kept)</h2>',
        *(finished_request(t) for t in done),
        "</section>",
    ]
    head += f"<style>{STYLE}</style>"
    return f'<!doctype html><html lang="en"><head>{head}</head><body>{"".join(body)}</body></html>'
