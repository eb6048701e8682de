"""The streaming source: every copy path yields the bytes and checksum of the file."""

import hashlib
import os

import pytest
import xxhash

from trollmoves.errors import PermanentTransferError
from trollmoves.movers import source as source_module
from trollmoves.movers.source import KERNEL_COPY_STEP, PIPELINE_MIN_SIZE, Source


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["kernel-copy", "read-hash-write"])
@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, PIPELINE_MIN_SIZE + 12345, 3 * KERNEL_COPY_STEP])
@pytest.mark.parametrize("method", [None, "sha256", "xxh3_128"])
def test_copy_to_fd_paths(tmp_path, monkeypatch, size, method, kernel_copy):
    monkeypatch.setattr(source_module, "KERNEL_COPY", kernel_copy)
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
