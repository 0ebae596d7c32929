"""The app the server benchmarks run under ``gunicorn -k gevent -w 1 benchmarks.app:app``.

``BENCH_VARIANT`` and ``BENCH_SHAPE`` pick one of ``benchmarks/variants.py``'s apps
(default: bare, hello), served at ``/``; run baselines with ``FLASK_REQCTX_PATCH=0`` so
gevent stays gevent's own (``bench_server.py`` does).  ``/stats`` answers
``flask_reqctx.stats()`` (empty when flask_reqctx was never imported) and the RSS.
"""

from __future__ import annotations

import os
import sys

from benchmarks.variants import make_app

app = make_app(os.environ.get("BENCH_VARIANT", "bare"), os.environ.get("BENCH_SHAPE", "hello"))


@app.get("/stats")
def process_stats() -> dict[str, int]:
    """``live`` counts this /stats request itself under ReqCtx."""
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    reqctx = sys.modules.get("flask_reqctx")
    return {**(reqctx.stats() if reqctx is not None else {}), "rss": rss}
