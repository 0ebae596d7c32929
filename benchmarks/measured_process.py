"""The process ``bench_instructions.py`` runs under callgrind: one heap layout, then a workload.

    python benchmarks/measured_process.py LAYOUT VARIANT SHAPE N

CPython's type attribute cache is indexed by the attribute name's address, so where the
interned names of the imported modules land in the heap decides which lookups collide and
miss on every request: ~1,800 instructions a request between two checkouts of the same
tree on 3.13 (the same requests, another directory name).  Each layout allocates a
different amount in every small-object size class *before* anything is imported, so the
layouts sample that spread instead of repeating one point of it.
"""

from __future__ import annotations

import sys

#: One block per 8-byte step of the small-object allocator's size classes (up to 512 bytes).
_SIZES = range(1, 480, 8)


def heap_padding(layout: int) -> list[bytes]:
    """``3 * layout`` objects in each size class, kept alive for the process's life."""
    return [bytes(size) for size in _SIZES for _ in range(3 * layout)]


def main() -> None:
    layout, variant, shape, n = sys.argv[1:5]
    padding = heap_padding(int(layout))
    from variants import workload  # only now: its imports (Flask, the package) land after the padding

    workload(variant, shape, n)
    padding.clear()


if __name__ == "__main__":
    main()
