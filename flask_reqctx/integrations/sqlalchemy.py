"""Put the current request's id and trace on every SQL statement, as a sqlcommenter comment.

::

    from flask_reqctx.integrations import sqlalchemy as reqctx_sqlalchemy

    reqctx_sqlalchemy.attach(engine)   # once per Engine; idempotent

Every statement the engine sends during a request then ends in a comment in the
`sqlcommenter <https://google.github.io/sqlcommenter/spec/>`_ format (the one OpenTelemetry
adopted), which the database shows wherever it shows the query text (``pg_stat_activity``,
the statement and slow-query logs)::

    SELECT ... /*request_id='4bf92f35-...',traceparent='00-...-...-01'*/

* keys sorted; each value URL-encoded (every byte outside ``A-Za-z0-9_.~-`` becomes ``%XX``,
  so a value can never hold ``*/``, ``'`` or a newline: it cannot end the comment), then
  quoted; ``tracestate`` is added when the request received one;
* nothing outside a request context, and nothing when the statement already holds a comment
  (``/*`` or ``--``: the spec's rule; a string literal holding them also counts);
* for drivers with ``format``/``pyformat`` parameters (psycopg, psycopg2, mysqlclient), the
  ``%`` of the encoding is doubled when the driver will substitute parameters.

The comment makes each request's statements distinct texts: a driver that prepares
statements by their text (psycopg 3 after ``prepare_threshold`` runs of one text) no longer
reuses them across requests.  SQLAlchemy's own compiled cache is keyed before the comment and
is unaffected.  The measured cost is in ``benchmarks/RESULTS.md`` ("Integrations").
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from ..context import RequestContext, get_request_context
from ..ids import is_valid_request_id

__all__ = ["attach", "attached", "detach", "sqlcommenter_comment"]

_PERCENT_PARAMSTYLES = frozenset({"format", "pyformat"})


def attach(engine: Engine) -> None:
    """Comment every statement ``engine`` executes in a request context (idempotent)."""
    if not event.contains(engine, "before_cursor_execute", _comment_statement):
        event.listen(engine, "before_cursor_execute", _comment_statement, retval=True)


def detach(engine: Engine) -> None:
    """Stop commenting ``engine``'s statements."""
    if event.contains(engine, "before_cursor_execute", _comment_statement):
        event.remove(engine, "before_cursor_execute", _comment_statement)


def attached(engine: Engine) -> bool:
    """Whether ``engine`` is attached."""
    return event.contains(engine, "before_cursor_execute", _comment_statement)


def sqlcommenter_comment(context: RequestContext) -> str:
    """``/*request_id='...',traceparent='...'[,tracestate='...']*/`` for ``context``.

    The keys are fixed and already in order.  A request id passes the id rule, whose only
    character outside URL-encoding's unreserved set is ``:`` (so one ``replace`` is its
    encoding); a ``traceparent`` is hex digits and dashes; a ``tracestate`` is encoded whole.
    """
    trace = context.trace.headers()
    request_id = context.request_id
    if is_valid_request_id(request_id):
        request_id = request_id.replace(":", "%3A")
    else:  # not made by this package: encode it all the same
        request_id = quote(request_id, safe="")
    comment = f"/*request_id='{request_id}',traceparent='{trace['traceparent']}'"
    state = trace.get("tracestate")
    if state:
        comment += f",tracestate='{quote(state, safe='')}'"
    return comment + "*/"


def _comment_statement(
    conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    request_context = get_request_context()
    if request_context is None or "/*" in statement or "--" in statement:
        return statement, parameters
    comment = sqlcommenter_comment(request_context)
    if conn.dialect.paramstyle in _PERCENT_PARAMSTYLES and not _sent_without_parameters(parameters, context):
        comment = comment.replace("%", "%%")
    statement = statement.rstrip()
    if statement.endswith(";"):  # the comment belongs to the statement, before its terminator
        return f"{statement[:-1].rstrip()} {comment};", parameters
    return f"{statement} {comment}", parameters


def _sent_without_parameters(parameters: Any, context: Any) -> bool:
    """SQLAlchemy calls ``cursor.execute(statement)`` with no parameters (so the driver does
    not read ``%``) only for an empty parameter set with the ``no_parameters`` option."""
    return not parameters and context is not None and bool(context.no_parameters)
