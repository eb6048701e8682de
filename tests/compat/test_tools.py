"""Differential scenarios for move_it, the dispatcher and the s3downloader: trollmoves 0.19.0 against ours.

Each tool's scenarios (``tools_scenarios.py``) run once per session in shared daemons (``tools_runner.py``);
each test then compares one scenario's outcomes: delivered files (path → sha256, nothing else under the
destination roots), published messages (type, subject, uid, uri, metadata keys; our size/mtime/checksum
additions ignored), whether each published uri names a delivered file, and exit status for start-up
scenarios. Ours must equal 0.19 except where a scenario records a deliberate difference (``differences``);
where 0.19 crashes (``ours_only``) ours' documented behaviour is asserted alone; a divergence not fixed yet
is an ``xfail(strict=True)`` whose reason names it.
"""

from __future__ import annotations

import pytest

from tests.compat import harness, tools_runner
from tests.compat.tools_scenarios import DISPATCHER, EXITS, MOVE_IT, S3DOWNLOADER

pytestmark = [pytest.mark.timeout(600)]  # without trollmoves 0.19: see conftest's _original_019


def _params(scenarios):
    return [
        pytest.param(s, id=s.id, marks=[pytest.mark.xfail(strict=True, reason=s.xfail)] if s.xfail else [])
        for s in scenarios
    ]


@pytest.fixture(scope="session")
def tools_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("compat-tools"))


@pytest.fixture(scope="session")
def move_it_results(compat_servers, tools_root):
    return tools_runner.run_move_it(MOVE_IT, compat_servers, f"{tools_root}/move_it")


@pytest.fixture(scope="session")
def dispatcher_results(compat_servers, nameserver, tools_root):
    return tools_runner.run_dispatcher(DISPATCHER, compat_servers, f"{tools_root}/dispatcher")


@pytest.fixture(scope="session")
def s3downloader_results(compat_servers, nameserver, tools_root):
    return tools_runner.run_s3downloader(S3DOWNLOADER, compat_servers, f"{tools_root}/s3downloader")


@pytest.fixture(scope="session")
def exit_results(compat_servers, nameserver, tools_root):
    return tools_runner.run_exits(EXITS, compat_servers, f"{tools_root}/exits")


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------


def _logs(outcomes: dict) -> str:
    return "\n".join(
        f"--- {impl} outcome:\n{tools_runner.dump(o)}\n--- {impl} log (tail):\n{o['log'][-2500:]}"
        for impl, o in outcomes.items()
    )


def verify(scenario, outcomes: dict) -> None:
    """Compare ours with 0.19 (or ours with its documented outcome), then the scenario's extra checks."""
    ours = outcomes["ours"]
    try:
        if scenario.ours_only:
            for aspect, expected in scenario.expected.items():
                assert ours.get(aspect) == expected, (
                    f"scenario {scenario.id} ({scenario.doc}); 0.19 not run: {scenario.ours_only}\n"
                    f"{aspect}:\n  expected: {expected!r}\n  ours:     {ours.get(aspect)!r}"
                )
            if "raw_messages" in ours:
                assert len(ours["raw_messages"]) == scenario.expected_messages("ours"), "published messages"
        else:
            original = outcomes["019"]
            if scenario.kind != "exit":
                assert len(original["raw_messages"]) == scenario.expected_messages("019"), (
                    f"scenario {scenario.id}: 0.19 itself did not behave as the scenario states "
                    f"({len(original['raw_messages'])} messages, "
                    f"{scenario.expected_messages('019')} expected)"
                )
            if scenario.kind == "exit" and scenario.drop and "files" in scenario.aspects:
                assert original["files"], f"scenario {scenario.id}: 0.19 itself moved no file"
            harness.compare(scenario.id, original, ours, scenario.aspects, scenario.differences)
        for name in scenario.checks:
            CHECKS[name](scenario, outcomes)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{_logs(outcomes)}") from None


def check_s3_messages_are_019_plus_uid(scenario, outcomes: dict) -> None:
    """Ours' republished message is 0.19's plus ``uid`` = the downloaded file's base name."""
    original, ours = outcomes["019"]["messages"], outcomes["ours"]["messages"]
    widened = harness.canonical(
        [
            (t, s, uri.rsplit("/", 1)[-1], uri, tuple(sorted(keys + ("uid",))))
            for t, s, _, uri, keys in original
        ]
    )
    assert ours == widened, f"s3downloader messages:\n  0.19 + uid: {widened!r}\n  ours:       {ours!r}"
    assert outcomes["ours"]["uris_resolve"] == outcomes["019"]["uris_resolve"] == [True] * len(ours)


def check_log_names_destinations(scenario, outcomes: dict) -> None:
    """Ours refuses the config with a message naming the file, the section and the key."""
    log = outcomes["ours"]["log"]
    assert "[compat] destinations" in log and "gopher" in log, log[-2000:]


CHECKS = {f.__name__: f for f in (check_s3_messages_are_019_plus_uid, check_log_names_destinations)}


# --------------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", _params(MOVE_IT))
def test_move_it(scenario, move_it_results):
    verify(scenario, move_it_results[scenario.id])


@pytest.mark.parametrize("scenario", _params(DISPATCHER))
def test_dispatcher(scenario, dispatcher_results):
    verify(scenario, dispatcher_results[scenario.id])


@pytest.mark.parametrize("scenario", _params(S3DOWNLOADER))
def test_s3downloader(scenario, s3downloader_results):
    verify(scenario, s3downloader_results[scenario.id])


@pytest.mark.parametrize("scenario", _params(EXITS))
def test_startup(scenario, exit_results):
    verify(scenario, exit_results[scenario.id])


def test_scenario_ids_are_unique():
    ids = [s.id for s in MOVE_IT + DISPATCHER + S3DOWNLOADER + EXITS]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
