"""``new_hasher`` and the copy/hash loops fed by it give the digests of hashlib and python xxhash.

Why: the compiled module hashes in C (OpenSSL EVP resolved at run time, vendored XXH3) and
writes from a second thread once a read fills the buffer; the digests announced in messages
must still be byte for byte those of hashlib/xxhash (xxh3_128 in its canonical big-endian
order), for every size around the buffer length, and every error must still surface.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import os
import threading
from pathlib import Path

import pytest
import xxhash

METHODS = ("sha256", "sha512", "md5", "xxh3_64", "xxh3_128")
BUFFER = 64 * 1024
SIZES = [0, 1, 7, BUFFER - 1, BUFFER, BUFFER + 1, 2 * BUFFER, 3 * BUFFER - 5, 5 * BUFFER, 1024 * 1024 + 3]


def _reference(method: str):
    return {
        "md5": lambda: hashlib.md5(usedforsecurity=False),
        "xxh3_64": xxhash.xxh3_64,
        "xxh3_128": xxhash.xxh3_128,
    }.get(method, lambda: hashlib.new(method))()


@pytest.fixture(params=["py", pytest.param("c", marks=pytest.mark.c_extension)])
def module(request, require_extensions):
    if request.param == "py":
        return importlib.import_module("trollmoves._native")
    try:
        return importlib.import_module("trollmoves._speedups")
    except ImportError as exc:
        if require_extensions:
            pytest.fail(f"trollmoves._speedups does not import: {exc}")
        pytest.skip(f"trollmoves._speedups is not built ({exc})")


@pytest.fixture(scope="module")
def payloads(tmp_path_factory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("payloads")
    out = {}
    for size in SIZES:
        path = base / f"{size}.bin"
        path.write_bytes(os.urandom(size))
        out[size] = path
    return out


def _copy(module, src: Path, dst: Path, hasher, buffer_size: int = BUFFER, on_chunk=None) -> int:
    src_fd = os.open(src, os.O_RDONLY)
    dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        return module.copy_stream(src_fd, dst_fd, bytearray(buffer_size), hasher, False, on_chunk)
    finally:
        os.close(src_fd)
        os.close(dst_fd)


@pytest.mark.parametrize("method", METHODS)
def test_new_hasher_update_digest_copy_match_the_libraries(module, method):
    data = os.urandom(200_000)
    ours, theirs = module.new_hasher(method), _reference(method)
    assert module.new_hasher(method).hexdigest() == _reference(method).hexdigest()  # nothing hashed
    for piece in (data[:1], data[1:70_000], memoryview(data)[70_000:], b""):
        ours.update(piece)
        theirs.update(piece)
    snapshot = ours.copy()
    assert ours.digest() == theirs.digest()
    assert ours.hexdigest() == theirs.hexdigest()
    assert ours.digest() == theirs.digest()  # digest() does not end the hash
    snapshot.update(b"more")
    theirs.update(b"more")
    assert snapshot.hexdigest() == theirs.hexdigest()
    assert ours.hexdigest() != snapshot.hexdigest()
    assert module.new_hasher(None) is None


@pytest.mark.parametrize("method", METHODS + (None,))
@pytest.mark.parametrize("size", SIZES)
def test_copy_stream_with_new_hasher(module, payloads, tmp_path, method, size):
    src = payloads[size]
    dst = tmp_path / "dst.bin"
    hasher = module.new_hasher(method)
    assert _copy(module, src, dst, hasher) == size
    data = src.read_bytes()
    assert dst.read_bytes() == data
    if method is not None:
        reference = _reference(method)
        reference.update(data)
        assert hasher.hexdigest() == reference.hexdigest()


@pytest.mark.parametrize("method", ("sha256", "xxh3_128"))
@pytest.mark.parametrize("size", SIZES)
def test_hash_stream_with_new_hasher(module, payloads, method, size):
    hasher = module.new_hasher(method)
    fd = os.open(payloads[size], os.O_RDONLY)
    try:
        assert module.hash_stream(fd, bytearray(BUFFER), hasher) == size
    finally:
        os.close(fd)
    reference = _reference(method)
    reference.update(payloads[size].read_bytes())
    assert hasher.hexdigest() == reference.hexdigest()


@pytest.mark.parametrize("size", [BUFFER - 1, 5 * BUFFER, 1024 * 1024 + 3])
def test_copy_stream_with_a_library_hasher_object(module, payloads, tmp_path, size):
    """Any object with update() still works (fed with the GIL between the C steps)."""
    hasher = hashlib.sha256()
    assert _copy(module, payloads[size], tmp_path / "dst.bin", hasher) == size
    assert hasher.hexdigest() == hashlib.sha256(payloads[size].read_bytes()).hexdigest()
    assert (tmp_path / "dst.bin").read_bytes() == payloads[size].read_bytes()


@pytest.mark.parametrize("size", [BUFFER - 1, 5 * BUFFER])
@pytest.mark.parametrize("method", ("sha256", "xxh3_128", None))
def test_write_failure_raises_enospc(module, payloads, method, size):
    """/dev/full refuses every write: serially (small file) and from the writer thread (big file)."""
    src_fd = os.open(payloads[size], os.O_RDONLY)
    dst_fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as info:
            module.copy_stream(src_fd, dst_fd, bytearray(BUFFER), module.new_hasher(method))
        assert info.value.errno == errno.ENOSPC
    finally:
        os.close(src_fd)
        os.close(dst_fd)


@pytest.mark.parametrize("method", ("xxh3_128", "sha256"))
def test_short_writes_are_completed(module, tmp_path, method):
    """A pipe takes at most its capacity per write: every byte still arrives, in order, hashed once.

    (xxh3: the compiled writer-behind thread; sha256: the compiled reader-writer thread.)
    """
    data = os.urandom(6 * BUFFER + 11)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    read_fd, write_fd = os.pipe()
    received = bytearray()

    def drain():
        while chunk := os.read(read_fd, 7000):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    src_fd = os.open(src, os.O_RDONLY)
    hasher = module.new_hasher(method)
    try:
        assert module.copy_stream(src_fd, write_fd, bytearray(BUFFER), hasher) == len(data)
    finally:
        os.close(src_fd)
        os.close(write_fd)
        reader.join()
        os.close(read_fd)
    assert bytes(received) == data
    reference = _reference(method)
    reference.update(data)
    assert hasher.hexdigest() == reference.hexdigest()


def test_read_error_raises(module, tmp_path):
    """A directory opened for reading fails at read(2) with EISDIR."""
    dir_fd = os.open(tmp_path, os.O_RDONLY)
    dst_fd = os.open(tmp_path / "dst.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError) as info:
            module.copy_stream(dir_fd, dst_fd, bytearray(BUFFER), module.new_hasher("sha256"))
        assert info.value.errno == errno.EISDIR
        with pytest.raises(OSError):
            module.hash_stream(dir_fd, bytearray(BUFFER), module.new_hasher("xxh3_128"))
    finally:
        os.close(dir_fd)
        os.close(dst_fd)


def test_on_chunk_sees_progress_and_can_stop_the_copy(module, payloads, tmp_path):
    seen = []

    class Stop(Exception):
        pass

    def on_chunk(total):
        seen.append(total)
        if len(seen) == 2:
            raise Stop

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 * BUFFER))
    with pytest.raises(Stop):
        _copy(module, big, tmp_path / "dst.bin", module.new_hasher("sha256"), on_chunk=on_chunk)
    assert seen == [BUFFER, 2 * BUFFER]
    # stopped: the compiled reader-writer thread runs at most a few buffers (its ring) ahead of the hash
    assert (tmp_path / "dst.bin").stat().st_size <= 8 * BUFFER
    totals = []
    assert _copy(module, payloads[BUFFER + 1], tmp_path / "b.bin", None, on_chunk=totals.append) == BUFFER + 1
    assert totals == [BUFFER, BUFFER + 1]


def test_checksum_module_uses_the_selected_hasher():
    from trollmoves import _accel
    from trollmoves.movers.checksum import file_checksum, new_hasher

    hasher = new_hasher("xxh3_128")
    assert type(hasher) is type(_accel.new_hasher("xxh3_128"))
    with pytest.raises(ValueError):
        new_hasher("crc32")
    assert file_checksum(__file__, "sha256").value == hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


@pytest.mark.c_extension
def test_without_libcrypto_the_compiled_module_falls_back_to_hashlib(require_extensions, tmp_path):
    """No usable EVP (another libcrypto, a static _hashlib): hashlib objects, still fed by copy_stream."""
    try:
        speedups = importlib.import_module("trollmoves._speedups")
    except ImportError:
        if require_extensions:
            raise
        pytest.skip("trollmoves._speedups is not built")
    saved = speedups._evp_status[0]
    speedups._evp_status[0] = -1  # as after a failed load
    try:
        hasher = speedups.new_hasher("sha256")
        assert type(hasher) is type(hashlib.sha256())
        assert type(speedups.new_hasher("md5")) is type(hashlib.md5(usedforsecurity=False))
        assert type(speedups.new_hasher("xxh3_128")) is not type(xxhash.xxh3_128())  # XXH3 needs no libcrypto
    finally:
        speedups._evp_status[0] = saved
    data = os.urandom(5 * BUFFER + 3)
    (tmp_path / "src.bin").write_bytes(data)
    assert _copy(speedups, tmp_path / "src.bin", tmp_path / "dst.bin", hasher) == len(data)
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.c_extension
def test_a_compiled_hasher_refuses_a_second_concurrent_user(require_extensions, tmp_path):
    """While copy_stream feeds it without the GIL, another thread's update() fails instead of corrupting it."""
    try:
        speedups = importlib.import_module("trollmoves._speedups")
    except ImportError:
        if require_extensions:
            raise
        pytest.skip("trollmoves._speedups is not built")
    hasher = speedups.new_hasher("sha256")
    errors = []

    def on_chunk(total):
        try:
            hasher.update(b"x")
        except RuntimeError as err:
            errors.append(err)

    data = os.urandom(3 * BUFFER)
    (tmp_path / "src.bin").write_bytes(data)
    _copy(speedups, tmp_path / "src.bin", tmp_path / "dst.bin", hasher, on_chunk=on_chunk)
    assert len(errors) == 3
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.c_extension
def test_an_uninitialised_compiled_hasher_raises_instead_of_crashing(require_extensions):
    try:
        speedups = importlib.import_module("trollmoves._speedups")
    except ImportError:
        if require_extensions:
            raise
        pytest.skip("trollmoves._speedups is not built")
    bare = type(speedups.new_hasher("xxh3_128"))()
    with pytest.raises(ValueError):
        bare.update(b"x")
    with pytest.raises(ValueError):
        bare.digest()
    with pytest.raises(MemoryError):
        bare.copy()
