"""Server and client of trollmoves 0.19.0 and ours, scenario by scenario (see scenarios_server_client.py)."""

from __future__ import annotations

import pytest

from tests.compat import harness
from tests.compat.scenarios_server_client import SCENARIOS

pytestmark = [pytest.mark.timeout(600)]  # without trollmoves 0.19: see conftest's _original_019


def _param(scenario):
    marks = [pytest.mark.xfail(strict=True, reason=scenario.xfail)] if scenario.xfail else []
    return pytest.param(scenario, id=scenario.id, marks=marks)


@pytest.mark.parametrize("scenario", [_param(s) for s in SCENARIOS])
def test_scenario(scenario, server_client_results):
    """Ours matches 0.19 on every compared aspect, except the documented deliberate differences."""
    outcome = server_client_results[scenario.id]
    if scenario.ours_only:
        ours = outcome["ours"]
        for aspect, expected in scenario.expected.items():
            value = expected(ours[aspect]) if callable(expected) else ours[aspect] == expected
            assert value, (f"scenario {scenario.id} (0.19 not compared: {scenario.ours_only}): {aspect} is "
                           f"{ours[aspect]!r}\nours' log tail:\n{ours['log'][-3000:]}")
        return
    try:
        harness.compare(scenario.id, outcome["019"], outcome["ours"], scenario.aspects, scenario.differences)
    except AssertionError as err:
        raise AssertionError(f"{err}\n--- replies 0.19: {outcome['019']['replies_raw']}\n"
                             f"--- replies ours: {outcome['ours']['replies_raw']}") from None
