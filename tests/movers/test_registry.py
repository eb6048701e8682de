"""Scheme -> mover class: lazy, extensible once per scheme, helpful when an extra is missing."""

import subprocess
import sys

import pytest

from trollmoves.errors import PermanentTransferError
from trollmoves.movers import MoverRegistry, UnsupportedSchemeError
from trollmoves.movers.local import FileMover


def test_builtin_schemes_resolve():
    registry = MoverRegistry(entry_points=False)
    assert registry.get("") is registry.get("file") is FileMover
    assert {"ftp", "scp", "sftp", "s3"} <= set(registry.schemes())


def test_unknown_scheme_is_permanent_and_a_key_error():
    with pytest.raises(UnsupportedSchemeError, match="gopher") as err:
        MoverRegistry(entry_points=False).get("gopher")
    assert isinstance(err.value, KeyError) and isinstance(err.value, PermanentTransferError)


def test_a_scheme_can_be_registered_once():
    registry = MoverRegistry(entry_points=False)
    registry.register("mem", FileMover)
    assert registry.get("mem") is FileMover
    with pytest.raises(ValueError, match="already registered"):
        registry.register("mem", FileMover)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("sftp", "x:Y")


def test_importing_movers_imports_no_protocol_library():
    code = ("import sys, trollmoves.movers as m; "
            "print(sorted(n for n in ('paramiko', 'boto3', 'botocore', 'ftplib') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_s3_extra_says_what_to_install(tmp_path):
    (tmp_path / "f").write_text("x")
    code = ("import sys; sys.modules['boto3'] = None\n"
            "from trollmoves.movers import TransferService\n"
            "try:\n"
            f"    TransferService().transfer({str(tmp_path / 'f')!r}, 's3://bucket/', {{'retries': 0}})\n"
            "except Exception as err:\n"
            "    print(type(err).__name__, err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("PermanentTransferError") and "pip install trollmoves[s3]" in out
