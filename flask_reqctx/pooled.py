"""Random ids made in batches and handed out one C-level call at a time.

``pooled(make_batch)`` returns a chain over batches: ``next(pool)`` (the cheapest call, a
builtin's) or ``pool.__next__`` takes an id without a Python frame, and a new batch is
made only when one runs out.  A forked child
(gunicorn forks its workers) drops what is left of the current batch, so no two
processes ever hand out the same ids.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

__all__: list[str] = []  # internal: nothing here for users to import


def pooled(make_batch: Callable[[], list[str]]) -> Iterator[str]:
    current: list[list[str]] = [[]]

    def next_batch() -> list[str]:
        batch = current[0] = make_batch()
        return batch

    # The chain iterates the very list in current[0]: clearing it ends that batch.
    os.register_at_fork(after_in_child=lambda: current[0].clear())
    return itertools.chain.from_iterable(iter(next_batch, None))
