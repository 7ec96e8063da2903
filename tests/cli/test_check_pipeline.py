"""`nimify check-pipeline`'s termination message: what the operator decodes, however long the result."""

from __future__ import annotations

import json
import random
import string

from nimify.cli.check_pipeline import termination_message
from nimify.engine.result import TERMINATION_MESSAGE_LIMIT, decode_termination_message


def test_a_long_result_is_still_a_result_the_operator_reads() -> None:
    rng = random.Random(0)  # noise that does not compress below the limit
    noise = "".join(rng.choice(string.ascii_letters) for _ in range(20_000))
    result = {
        "ok": False,
        "parity": {"check": "ensemble", "passed": False, "shapes": [noise[:1000]] * 8},
        "error": {"reason": "ParityFailed", "message": noise},
    }
    message = termination_message(result, json.dumps(result))
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    decoded = decode_termination_message(message)
    assert decoded is not None and decoded["ok"] is False and decoded["error"]["reason"] == "ParityFailed"
    assert "shapes" not in decoded["parity"] and decoded["truncated"] is True


def test_a_short_result_goes_as_it_is() -> None:
    result = {"ok": True, "parity": {"check": "ensemble", "passed": True, "samples": 8}}
    line = json.dumps(result)
    assert termination_message(result, line) == line
