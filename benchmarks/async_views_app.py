"""A Flask app with one ``async def`` view, for ``async_views_gevent.py``.

``ASYNC_REQCTX=1`` wraps it with ``ReqCtx``; ``ASYNC_REQCTX=0`` never imports flask_reqctx.
"""

from __future__ import annotations

import asyncio
import os

from flask import Flask

app = Flask(__name__)

if os.environ.get("ASYNC_REQCTX", "0") == "1":
    from flask_reqctx import ReqCtx

    ReqCtx(app)


@app.get("/health")
def health() -> str:
    return "ok"


@app.get("/async")
async def async_view() -> str:
    await asyncio.sleep(0.01)
    return "ok"
