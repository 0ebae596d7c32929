"""Our context variables sit apart from Flask's in the context mapping.

A context's variables live in a HAMT indexed by 5 bits of each variable's hash at a time;
two variables sharing their first-level slot make every set, reset and lookup of either walk
a second level (measured: ~2,100 instructions a request on 3.13).  The hashes come from the
variables' addresses, so the slots are checked in fresh interpreters, each with its memory
laid out differently.
"""

from __future__ import annotations

import json

from fresh_interpreter import run_in_fresh_interpreter

PROGRAM = """
import json
from flask_reqctx.context import FLASK_VARIABLES, current_context, current_unit, mapping_slot
print(json.dumps({
    "flask": sorted(mapping_slot(v) for v in FLASK_VARIABLES),
    "context": mapping_slot(current_context),
    "unit": mapping_slot(current_unit),
}))
"""


def test_our_variables_take_slots_apart_from_flasks_and_each_others() -> None:
    for padding in range(8):  # each a different environment size: another memory layout
        result = run_in_fresh_interpreter(PROGRAM, env={"REQCTX_TEST_LAYOUT": "x" * (997 * padding)})
        slots = json.loads(result.stdout.strip().splitlines()[-1])
        assert slots["context"] not in slots["flask"]
        assert slots["unit"] not in slots["flask"] and slots["unit"] != slots["context"]
