"""The streaming source: every copy path yields the bytes and checksum of the file."""

import hashlib
import os

import pytest
import xxhash

from trollmoves.errors import PermanentTransferError
from trollmoves.movers import source as source_module
from trollmoves.movers.source import KERNEL_COPY_STEP, PIPELINE_MIN_SIZE, Source


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["kernel-copy", "read-hash-write"])
@pytest.mark.parametrize("compiled_pipeline", [True, False], ids=["copy_stream", "python-pipelines"])
@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, PIPELINE_MIN_SIZE + 12345, 3 * KERNEL_COPY_STEP])
@pytest.mark.parametrize("method", [None, "sha256", "xxh3_128"])
def test_copy_to_fd_paths(tmp_path, monkeypatch, size, method, kernel_copy, compiled_pipeline):
    monkeypatch.setattr(source_module, "KERNEL_COPY", kernel_copy)
    monkeypatch.setattr(source_module, "COMPILED_PIPELINE", compiled_pipeline)
    data = os.urandom(size)
    (tmp_path / "src").write_bytes(data)
    with Source(str(tmp_path / "src"), method) as source, open(tmp_path / "dst", "w+b") as out:
        assert source.copy_to_fd(out.fileno()) == size
        checksum = source.checksum()
    assert (tmp_path / "dst").read_bytes() == data
    if method == "sha256":
        assert checksum.value == hashlib.sha256(data).hexdigest()
    elif method:
        assert checksum.value == xxhash.xxh3_128(data).hexdigest()
    else:
        assert checksum is None


def test_no_checksum_falls_back_when_the_kernel_cannot_copy(tmp_path, monkeypatch):
    """copy_file_range refused (EXDEV: another file system), then sendfile refused: copy_stream copies."""
    import errno
    import threading

    def refuse(*args, **kwargs):
        raise OSError(errno.EXDEV, "cross-device")

    def refuse_sendfile(*args, **kwargs):
        raise OSError(errno.EINVAL, "no sendfile")

    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "src").write_bytes(data)
    monkeypatch.setattr(source_module.os, "copy_file_range", refuse)
    monkeypatch.setattr(source_module.os, "sendfile", refuse_sendfile)
    seen = []
    with Source(str(tmp_path / "src"), None, cancel=threading.Event(), progress=seen.append) as source, \
            open(tmp_path / "dst", "w+b") as out:
        assert source.copy_to_fd(out.fileno()) == len(data)
    assert (tmp_path / "dst").read_bytes() == data
    assert seen[-1] == len(data)


def test_a_cancelled_big_copy_stops_between_chunks(tmp_path, monkeypatch):
    """The compiled copy_stream calls back after each chunk: cancel is seen there, progress is reported."""
    import threading

    from trollmoves.errors import TransientTransferError

    monkeypatch.setattr(source_module, "COMPILED_PIPELINE", True)
    data = os.urandom(6 * (1 << 20))
    (tmp_path / "src").write_bytes(data)
    cancel = threading.Event()
    seen = []

    def progress(done):
        seen.append(done)
        if len(seen) == 2:
            cancel.set()

    with Source(str(tmp_path / "src"), "sha256", cancel=cancel, progress=progress) as source, \
            open(tmp_path / "dst", "w+b") as out:
        with pytest.raises(TransientTransferError):
            source.copy_to_fd(out.fileno())
    assert seen == [1 << 20, 2 << 20]


def test_chunks_read_bytes_and_rewind_agree(tmp_path):
    data = os.urandom(3 * (1 << 20) + 5)
    (tmp_path / "src").write_bytes(data)
    with Source(str(tmp_path / "src"), "md5", buffer_size=1 << 20) as source:
        assert b"".join(bytes(chunk) for chunk in source.chunks()) == data
        first = source.checksum()
        source.rewind()
        assert source.read_bytes(2 << 20) + source.read_bytes(10 << 20) == data
        assert source.checksum() == first and first.value == hashlib.md5(data).hexdigest()


def test_missing_source_is_permanent(tmp_path):
    with pytest.raises(PermanentTransferError, match="does not exist"):
        Source(str(tmp_path / "nothere"), None)
