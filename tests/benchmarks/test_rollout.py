"""The rollout benchmark's spec and table (the run itself needs the machine's one real node to itself:
hack/bench-rollout, never inside the suite, whose session cluster holds that node)."""

from __future__ import annotations

from benchmarks.rollout import rollout_spec, table

from nimify.api.spec.rollout import RolloutSpec


def test_two_steps_of_the_hold_asked_for_judged_by_the_analysis() -> None:
    spec = RolloutSpec.model_validate(rollout_spec(30))
    assert spec.canary and [(s.weight, s.hold_seconds) for s in spec.steps or []] == [(30, 30), (60, 30)]
    assert spec.analysis is not None and spec.analysis.max_error_ratio == 0.05


def test_the_table_has_a_row_per_case() -> None:
    text = table(
        [
            {"case": "good update", "phase": "Promoted", "spec_change_to_end_s": 84.2, "client_requests": 800,
             "client_failures": 0},
            {"case": "bad candidate", "phase": "RolledBack", "spec_change_to_end_s": 21.0,
             "client_requests": 200, "client_failures": 34, "traffic_to_rollback_s": 13.0,
             "answered_by_bad_candidate": 33},
        ]
    )  # fmt: skip
    assert "| good update | Promoted | 84.2 s | - s | - | 800 (0) |" in text
    assert "| bad candidate | RolledBack | 21.0 s | 13.0 s | 33 | 200 (34) |" in text
