"""No module of trollmoves/ grows past about 500 lines unless the reason is written here.

Small modules with one job are the project's convention (issue 16 split the 1.1k-1.7k line
server, client, config and messaging modules); a module that outgrows the bound is a sign that a
second job moved in. An exception names its bound and why it is larger.
"""

from pathlib import Path

import trollmoves

PACKAGE = Path(trollmoves.__file__).resolve().parent
LIMIT = 500
EXCEPTIONS = {
    "client.py": (640, "the client's flow in one place: what it follows, decides and does for one chain; the "
                       "request path logs under the logger trollmoves.client, which users' logging configs "
                       "and the disk-full test name"),
}


def test_no_module_outgrows_its_bound():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = str(path.relative_to(PACKAGE))
        lines = len(path.read_text().splitlines())
        bound = EXCEPTIONS.get(name, (LIMIT, ""))[0]
        if lines > bound:
            too_long.append(f"{name}: {lines} lines (bound {bound})")
    assert not too_long, "split these modules, or add them to EXCEPTIONS with the reason: " + "; ".join(too_long)


def test_every_exception_is_still_needed():
    for name, (bound, reason) in EXCEPTIONS.items():
        lines = len((PACKAGE / name).read_text().splitlines())
        assert lines > LIMIT, f"{name} is back under {LIMIT} lines ({lines}): remove its exception"
        assert reason
