"""Where the WIS2 reference tools and data are, and how to run them.

The WIS2 tests judge our messages with the tools the rest of WIS2 uses, each in a virtual
environment of its own (their pins must not meet ours), found like trollmoves 0.19's venv:

* pywis-pubsub 0.12.0 + pywis-topics 0.4.0 (what pip picks on Python 3.11):
  ``$TROLLMOVES_PYWIS_VENV``, else ``/opt/trollmoves-pywis-venv`` as root and
  ``${XDG_DATA_HOME:-~/.local/share}/trollmoves/pywis-venv`` otherwise;
* Sarracenia (metpx-sr3): ``$TROLLMOVES_SR3_VENV``, else ``/opt/trollmoves-sr3-venv`` /
  ``.../trollmoves/sr3-venv``;
* the WMO schema and topic tables: ``$TROLLMOVES_WIS2_DATA``, else ``<repo>/../shared/data/wis2``
  (test data, not part of the project: tests needing it skip when it is absent, even in CI).

pywis-pubsub reads the schema from ``$HOME/.pywis-pubsub/wis2-notification-message/``; it would
download it (``pywis-pubsub schema sync``) otherwise, so :func:`pywis_home` makes a HOME in the
test's temporary directory with the shared copy in place: nothing is fetched, the user's HOME is
not touched.

Plain code (pytest is imported only inside the ``require_*`` helpers) so other test helpers and
``perf/`` can import it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCHEMA_NAME = "wis2-notification-message-bundled.json"
PYWIS_VERSIONS = "pywis-pubsub==0.12.0 pywis-topics==0.4.0"
RUN_TIMEOUT = 120.0


def _default_venv(name: str) -> Path:
    """``/opt/trollmoves-<name>`` as root, else ``${XDG_DATA_HOME:-~/.local/share}/trollmoves/<name>``."""
    if os.geteuid() == 0:
        return Path(f"/opt/trollmoves-{name}")
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "trollmoves" / name


def pywis_venv() -> Path:
    """The venv holding pywis-pubsub and pywis-topics (``TROLLMOVES_PYWIS_VENV`` overrides)."""
    return Path(os.environ.get("TROLLMOVES_PYWIS_VENV") or _default_venv("pywis-venv"))


def sr3_venv() -> Path:
    """The venv holding Sarracenia's ``sr3`` (``TROLLMOVES_SR3_VENV`` overrides)."""
    return Path(os.environ.get("TROLLMOVES_SR3_VENV") or _default_venv("sr3-venv"))


def wis2_data_dir() -> Path:
    """The folder with the WNM schema and ``wis2-topic-hierarchy/`` (``TROLLMOVES_WIS2_DATA`` overrides)."""
    return Path(os.environ.get("TROLLMOVES_WIS2_DATA") or REPO.parent / "shared" / "data" / "wis2")


def schema_path() -> Path:
    """The bundled WNM JSON schema in :func:`wis2_data_dir`."""
    return wis2_data_dir() / SCHEMA_NAME


def have_wis2_data() -> bool:
    return schema_path().is_file() and (wis2_data_dir() / "wis2-topic-hierarchy" / "centre-id.csv").is_file()


def have_pywis() -> bool:
    venv = pywis_venv()
    return all((venv / "bin" / name).exists() for name in ("python", "pywis-pubsub", "pywis-topics"))


def have_sr3() -> bool:
    return (sr3_venv() / "bin" / "sr3").exists()


def require_wis2_data() -> Path:
    """:func:`wis2_data_dir`, or skip when it is absent - a plain skip, even under
    ``TROLLMOVES_REQUIRE_SERVERS=1``: the data is not part of the project (issue 18: "skip external
    validation when absent"), so a CI checkout without it cannot be made to have it."""
    import pytest

    if not have_wis2_data():
        pytest.skip(f"the WIS2 reference data (schema and topic tables) is not in {wis2_data_dir()} "
                    "(set TROLLMOVES_WIS2_DATA)")
    return wis2_data_dir()


def require_pywis() -> Path:
    """:func:`pywis_venv`, or skip (fail under ``TROLLMOVES_REQUIRE_SERVERS=1``) when it is not installed."""
    from tests.servers import require_or_skip

    if not have_pywis():
        require_or_skip(f"pywis-pubsub/pywis-topics are not installed in {pywis_venv()} (python -m venv it, "
                        f"then pip install {PYWIS_VERSIONS}; or set TROLLMOVES_PYWIS_VENV)")
    return pywis_venv()


def require_sr3() -> Path:
    """:func:`sr3_venv`, or skip (fail under ``TROLLMOVES_REQUIRE_SERVERS=1``) when it is not installed."""
    from tests.servers import require_or_skip

    if not have_sr3():
        require_or_skip(f"Sarracenia (metpx-sr3) is not installed in {sr3_venv()} (python -m venv it, then "
                        "pip install metpx-sr3; or set TROLLMOVES_SR3_VENV)")
    return sr3_venv()


def pywis_home(tmp_path: Path) -> Path:
    """A HOME for pywis-pubsub under ``tmp_path`` with the shared WNM schema where it looks for it."""
    home = Path(tmp_path) / "pywis-home"
    target = home / ".pywis-pubsub" / "wis2-notification-message" / SCHEMA_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(schema_path(), target)
    return home


def pywis_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a pywis tool: ours with HOME (and XDG dirs) inside the test's tmp dir."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"))
    env.update(extra or {})
    return env


def ets_validate(path: Path, home: Path) -> tuple[int, dict[str, Any] | None, str]:
    """Run ``pywis-pubsub ets validate PATH``: (exit code, its JSON report or None, all output).

    The exit code is the number of failed tests (0 = the message passed); the report is
    ``{"ets-report": {"summary": {"PASSED": n, "FAILED": n, "SKIPPED": n}, "tests": [...]}}``.
    """
    result = subprocess.run([str(pywis_venv() / "bin" / "pywis-pubsub"), "ets", "validate", str(path)],
                            env=pywis_env(home), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    output = result.stdout + result.stderr
    start = result.stdout.find("{")
    try:
        report = json.loads(result.stdout[start:]) if start >= 0 else None
    except ValueError:
        report = None
    return result.returncode, report, output


_PYWIS_BATCH = r"""
import json, sys
from pywis_topics.topics import TopicHierarchy
request = json.load(sys.stdin)
verdicts = {}
if request["topics"]:
    hierarchy = TopicHierarchy(tables=request["tables"])
    for topic in request["topics"]:
        try:
            verdicts[topic] = bool(hierarchy.validate(topic, publication=True))
        except ValueError as err:
            verdicts[topic] = False
messages = {}
if request["messages"]:
    from pywis_pubsub.ets import WNMTestSuite
    for key, message in request["messages"].items():
        try:
            # run_tests leaves the schema validation out of its report (the CLI stops on it): add it
            suite = WNMTestSuite(message)
            tests = [suite.test_requirement_validation()] + suite.run_tests()["ets-report"]["tests"]
            messages[key] = [test for test in tests if test["code"] == "FAILED"]
        except Exception as err:  # the suite itself crashes on some broken messages (no links: KeyError)
            messages[key] = [{"id": "crash", "code": "FAILED", "message": repr(err)}]
json.dump({"topics": verdicts, "messages": messages}, sys.stdout)
"""


def pywis_batch(home: Path, topics: Iterable[str] = (),
                messages: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[dict[str, bool], dict[str, list]]:
    """Judge many topics and messages with one pywis interpreter (the CLIs take one at a time).

    Topics: pywis-topics' ``TopicHierarchy(tables=<wis2 data>).validate(topic, publication=True)``
    (what ``pywis-topics topic validate publication`` runs).  Messages: pywis-pubsub's
    ``WNMTestSuite`` (what ``pywis-pubsub ets validate`` runs, schema validation included).
    Returns ({topic: valid}, {message key: [failed tests]}).
    """
    request = {"tables": str(wis2_data_dir()), "topics": list(topics), "messages": dict(messages or {})}
    result = subprocess.run([str(pywis_venv() / "bin" / "python"), "-c", _PYWIS_BATCH], input=json.dumps(request),
                            env=pywis_env(home), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"pywis batch failed ({result.returncode}): {result.stderr[-3000:]}")
    answer = json.loads(result.stdout)
    return answer["topics"], answer["messages"]
