"""Option names: a misspelt ``ReqCtx`` option is an error, a misspelt ``REQCTX_*`` key a warning."""

from __future__ import annotations

import warnings

import pytest
from flask import Flask

from flask_reqctx import ReqCtx


def test_an_unknown_option_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="'hedaer'"):
        ReqCtx(Flask("misspelt"), hedaer="X-Trace")
    with pytest.raises(TypeError, match="'trace_kep', 'trust_incomming'"):
        ReqCtx(trust_incomming=False, trace_kep=3)  # the app-factory form checks at once too


def test_known_options_are_accepted_in_both_forms():
    app = Flask("known")
    app.config.update(REQCTX_TRUST_INCOMING=False, REQCTX_TRACE_KEEP=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ReqCtx(app, header="X-Trace", data=lambda request: {}, trace=True)
    assert app.config["REQCTX_HEADER"] == "X-Trace"


def test_an_unknown_config_key_is_a_warning_naming_it_once():
    def init() -> list[warnings.WarningMessage]:
        app = Flask("misspelt-config")
        app.config.update(REQCTX_HEADRE="X-Trace", REQCTX_TRUST_INCOMING=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            ReqCtx(app)
        return caught

    first, second = init(), init()
    assert [str(w.message) for w in first] == [
        "unknown config key 'REQCTX_HEADRE' for flask_reqctx (first seen on app 'misspelt-config'): ignored"
    ]
    assert first[0].filename == __file__  # points at the ReqCtx(app) call
    assert second == []  # once
