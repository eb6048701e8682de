"""The compiled ``trollmoves._speedups`` and its pure twin ``trollmoves._native`` are interchangeable.

Why: ``trollmoves._accel`` picks either at import, so every daemon's bytes go
through one or the other depending on the machine. Both must copy and hash the
same bytes, return the same counts and raise the same errors; the stub must
describe both; and the compiled one must be what a plain install uses.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trollmoves

MODULES = ("trollmoves._native", "trollmoves._speedups")
STUB = Path(trollmoves.__file__).with_name("_speedups.pyi")
BUFFER = 64 * 1024
SIZES = [0, 1, BUFFER - 1, BUFFER, BUFFER + 1, 2 * BUFFER, 3 * 1024 * 1024 + 7]
"""Empty, one byte, around one and two buffer lengths, and a multi-MiB file."""


def _load_compiled(require: bool):
    try:
        return importlib.import_module("trollmoves._speedups")
    except ImportError as exc:
        if require:
            pytest.fail(f"TROLLMOVES_REQUIRE_EXTENSIONS=1 but trollmoves._speedups does not import: {exc}")
        pytest.skip(f"trollmoves._speedups is not built ({exc}); `pip install -e .` builds it")


@pytest.fixture(params=["py", pytest.param("c", marks=pytest.mark.c_extension)])
def speedups_module(request, require_extensions):
    """Each implementation in turn: ``py`` (trollmoves._native) and ``c`` (trollmoves._speedups)."""
    if request.param == "py":
        return importlib.import_module("trollmoves._native")
    return _load_compiled(require_extensions)


@pytest.fixture
def both_modules(require_extensions):
    """(native, compiled) for differential tests (mark them c_extension); compiled required as above."""
    return importlib.import_module("trollmoves._native"), _load_compiled(require_extensions)


def _payload(size: int) -> bytes:
    return os.urandom(size)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _copy(module, src: Path, dst: Path, buffer_size: int, hasher=None, do_fsync=False) -> int:
    src_fd = os.open(src, os.O_RDONLY)
    dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        return module.copy_stream(src_fd, dst_fd, bytearray(buffer_size), hasher, do_fsync)
    finally:
        os.close(src_fd)
        os.close(dst_fd)


def _hash(module, src: Path, buffer_size: int, hasher) -> int:
    fd = os.open(src, os.O_RDONLY)
    try:
        return module.hash_stream(fd, bytearray(buffer_size), hasher)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# Each implementation against the truth (the bytes and hashlib/xxhash of them)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("hasher_name", [None, "sha256", "xxh3_128"])
def test_copy_stream_copies_every_byte_and_hashes_them(speedups_module, tmp_path, size, hasher_name):
    data = _payload(size)
    src = _write(tmp_path / "src.bin", data)
    hasher = {"sha256": hashlib.sha256, "xxh3_128": xxhash.xxh3_128}[hasher_name]() if hasher_name else None
    copied = _copy(speedups_module, src, tmp_path / "dst.bin", BUFFER, hasher)
    assert copied == size
    assert (tmp_path / "dst.bin").read_bytes() == data
    if hasher is not None:
        expected = {"sha256": hashlib.sha256, "xxh3_128": xxhash.xxh3_128}[hasher_name](data).hexdigest()
        assert hasher.hexdigest() == expected


@pytest.mark.parametrize("size", [0, 5, BUFFER + 3])
def test_copy_stream_with_fsync(speedups_module, tmp_path, size):
    data = _payload(size)
    src = _write(tmp_path / "src.bin", data)
    assert _copy(speedups_module, src, tmp_path / "dst.bin", 4096, do_fsync=True) == size
    assert (tmp_path / "dst.bin").read_bytes() == data


@pytest.mark.parametrize("size", SIZES)
def test_hash_stream_matches_hashlib(speedups_module, tmp_path, size):
    data = _payload(size)
    src = _write(tmp_path / "src.bin", data)
    hasher = hashlib.sha256()
    assert _hash(speedups_module, src, BUFFER, hasher) == size
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_read_chunk_fills_the_buffer_then_reports_eof(speedups_module, tmp_path):
    data = _payload(10_000)
    fd = os.open(_write(tmp_path / "src.bin", data), os.O_RDONLY)
    try:
        buffer = bytearray(4096)
        chunks = []
        while count := speedups_module.read_chunk(fd, buffer):
            chunks.append(bytes(buffer[:count]))
        assert [len(c) for c in chunks] == [4096, 4096, 1808]
        assert b"".join(chunks) == data
        assert speedups_module.read_chunk(fd, buffer) == 0
    finally:
        os.close(fd)


def test_read_chunk_accepts_a_memoryview_slice(speedups_module, tmp_path):
    """Callers read into a window of a larger buffer; only that window is written."""
    fd = os.open(_write(tmp_path / "src.bin", b"abcdef"), os.O_RDONLY)
    try:
        buffer = bytearray(b"........")
        assert speedups_module.read_chunk(fd, memoryview(buffer)[2:5]) == 3
        assert buffer == bytearray(b"..abc...")
    finally:
        os.close(fd)


def test_copy_stream_from_a_pipe_with_short_reads(speedups_module, tmp_path):
    """A pipe delivers data in pieces smaller than the buffer: every piece is copied, in order."""
    data = os.urandom(300_000)
    read_fd, write_fd = os.pipe()

    def feed():
        with os.fdopen(write_fd, "wb", buffering=0) as pipe:
            for start in range(0, len(data), 7001):
                pipe.write(data[start : start + 7001])

    feeder = threading.Thread(target=feed)
    feeder.start()
    dst_fd = os.open(tmp_path / "dst.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        hasher = hashlib.sha256()
        assert speedups_module.copy_stream(read_fd, dst_fd, bytearray(BUFFER), hasher) == len(data)
    finally:
        feeder.join()
        os.close(read_fd)
        os.close(dst_fd)
    assert (tmp_path / "dst.bin").read_bytes() == data
    assert hasher.digest() == hashlib.sha256(data).digest()


def test_bad_file_descriptor_raises_oserror(speedups_module, tmp_path):
    fd = os.open(_write(tmp_path / "src.bin", b"x"), os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError) as read_error:
        speedups_module.read_chunk(fd, bytearray(10))
    with pytest.raises(OSError) as copy_error:
        speedups_module.copy_stream(fd, fd, bytearray(10))
    assert read_error.value.errno == copy_error.value.errno == 9  # EBADF


def test_write_failure_raises_oserror(speedups_module, tmp_path):
    """Writing to a read-only descriptor fails loudly, never returns a short count."""
    src = _write(tmp_path / "src.bin", b"payload")
    dst = _write(tmp_path / "dst.bin", b"")
    src_fd, dst_fd = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            speedups_module.copy_stream(src_fd, dst_fd, bytearray(16))
    finally:
        os.close(src_fd)
        os.close(dst_fd)


def test_read_only_buffer_is_refused(speedups_module, tmp_path):
    fd = os.open(_write(tmp_path / "src.bin", b"x"), os.O_RDONLY)
    try:
        with pytest.raises(BufferError):
            speedups_module.read_chunk(fd, b"immutable")
    finally:
        os.close(fd)


def test_zero_length_buffer_is_refused(speedups_module, tmp_path):
    src = _write(tmp_path / "src.bin", b"not empty")
    with pytest.raises(ValueError):
        _copy(speedups_module, src, tmp_path / "dst.bin", 0)


# --------------------------------------------------------------------------------------------------
# Differential: both implementations on the same random inputs
# --------------------------------------------------------------------------------------------------


@pytest.mark.c_extension
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.one_of(st.integers(0, 4096), st.integers(4097, 600_000)),
    buffer_size=st.integers(1, 70_000),
    with_hasher=st.booleans(),
    do_fsync=st.booleans(),
)
def test_differential_copy_stream(both_modules, tmp_path_factory, size, buffer_size, with_hasher, do_fsync):
    directory = tmp_path_factory.mktemp("diff")
    data = os.urandom(size)
    src = _write(directory / "src.bin", data)
    results = []
    for module in both_modules:
        hasher = xxhash.xxh3_128() if with_hasher else None
        dst = directory / f"dst-{module.__name__}.bin"
        count = _copy(module, src, dst, buffer_size, hasher, do_fsync)
        results.append((count, dst.read_bytes(), hasher.hexdigest() if hasher else None))
    assert results[0] == results[1]
    assert results[0][:2] == (size, data)


@pytest.mark.c_extension
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=20_000), buffer_size=st.integers(1, 9000))
def test_differential_hash_and_read_chunk(both_modules, tmp_path_factory, data, buffer_size):
    src = _write(tmp_path_factory.mktemp("diff") / "src.bin", data)
    digests, chunkings = [], []
    for module in both_modules:
        hasher = hashlib.sha256()
        assert _hash(module, src, buffer_size, hasher) == len(data)
        digests.append(hasher.digest())
        fd = os.open(src, os.O_RDONLY)
        try:
            buffer, sizes = bytearray(buffer_size), []
            while count := module.read_chunk(fd, buffer):
                sizes.append(count)
        finally:
            os.close(fd)
        chunkings.append(sizes)
    assert digests[0] == digests[1] == hashlib.sha256(data).digest()
    assert chunkings[0] == chunkings[1]


# --------------------------------------------------------------------------------------------------
# The stub, and which implementation is the default
# --------------------------------------------------------------------------------------------------


def _stub_signatures() -> dict[str, list[tuple[str, str | None]]]:
    """name -> [(parameter, default source or None)] from trollmoves/_speedups.pyi."""
    tree = ast.parse(STUB.read_text(encoding="utf-8"))
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            args = node.args.args
            defaults = [None] * (len(args) - len(node.args.defaults)) + [
                ast.unparse(d) for d in node.args.defaults
            ]
            out[node.name] = [(arg.arg, default) for arg, default in zip(args, defaults)]
    return out


def _public_functions(module) -> dict[str, list[tuple[str, str | None]]]:
    out = {}
    for name, obj in vars(module).items():
        if name.startswith("_") or not callable(obj) or getattr(obj, "__module__", None) != module.__name__:
            continue
        params = inspect.signature(obj).parameters.values()
        out[name] = [
            (p.name, None if p.default is inspect.Parameter.empty else repr(p.default)) for p in params
        ]
    return out


def test_stub_names_exactly_the_public_functions_of_both(speedups_module):
    """The stub, _native and _speedups agree on names, parameter names and defaults."""
    stub = _stub_signatures()
    assert _public_functions(speedups_module) == stub
    assert _public_functions(importlib.import_module("trollmoves._native")) == stub


def _implementation_in_fresh_interpreter(env_update: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TROLLMOVES_NO_EXTENSIONS",)}
    env.update(env_update)
    code = (
        "import trollmoves._accel as a, sys; "
        "print(a.IMPLEMENTATION, a.copy_stream.__module__, 'trollmoves._speedups' in sys.modules)"
    )
    return subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.c_extension
def test_compiled_module_is_the_default_in_a_fresh_interpreter(require_extensions):
    """A plain import (no TROLLMOVES_* variable) picks the compiled module, silently."""
    built = (
        subprocess.run(
            [sys.executable, "-c", "import trollmoves._speedups"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).returncode
        == 0
    )
    if not built and not require_extensions:
        pytest.skip("trollmoves._speedups is not built; `pip install -e .` builds it")
    result = _implementation_in_fresh_interpreter({"TROLLMOVES_REQUIRE_EXTENSIONS": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["c", "trollmoves._speedups", "True"]


def test_no_extensions_variable_selects_the_pure_twin():
    result = _implementation_in_fresh_interpreter({"TROLLMOVES_NO_EXTENSIONS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["py", "trollmoves._native", "False"]


def test_accel_exports_the_functions_of_the_selected_module():
    from trollmoves import _accel

    selected = importlib.import_module(
        {"c": "trollmoves._speedups", "py": "trollmoves._native"}[_accel.IMPLEMENTATION]
    )
    for name in _stub_signatures():
        assert getattr(_accel, name) is getattr(selected, name)
