"""Item 11: unpack edge cases: duplicate tar members and archives that expand without bound.

A tar holding one name twice unpacks like tar (the last member wins) and leaves nothing else
behind; a 307-byte tar.bz2 that expands to 300 MB, and a small .bz2 of zeros, are stopped at the
configured cap (``unpack_max_ratio``, ``unpack_max_size``) with an error naming the archive,
nothing written; a client configured with the keys refuses the bomb and still unpacks a genuine tar.
"""

from __future__ import annotations

import bz2
import io
import logging
import os
import tarfile
import time

import pytest

from tests.daemons.helpers import Collector, load, running, wait_for, write
from tests.hostile.rogue import RogueServer
from trollmoves.client import Client
from trollmoves.state import StateStore
from trollmoves.unpack import UnpackError, unpack


class Zeros(io.RawIOBase):
    """``size`` zero bytes, produced on demand (the bomb is built without holding it in memory)."""

    def __init__(self, size: int):
        self.left = size

    def readable(self):
        return True

    def readinto(self, buffer):
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def bomb(path, size=300 * 2**20) -> str:
    with tarfile.open(path, "w:bz2") as archive:
        info = tarfile.TarInfo("zeros.bin")
        info.size = size
        archive.addfile(info, io.BufferedReader(Zeros(size), 1 << 20))
    return str(path)


def add(archive, name, content: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(content)
    archive.addfile(info, io.BytesIO(content))


def test_duplicate_member_last_wins_nothing_left_behind(tmp_path):
    path = tmp_path / "dup.tar"
    with tarfile.open(path, "w") as archive:
        add(archive, "dup.txt", b"first")
        add(archive, "other.txt", b"other")
        add(archive, "dup.txt", b"second")
    results = unpack(str(path), "tar", delete=True)
    assert sorted(results) == [str(tmp_path / "dup.txt"), str(tmp_path / "other.txt")]
    assert (tmp_path / "dup.txt").read_bytes() == b"second"
    assert sorted(os.listdir(tmp_path)) == ["dup.txt", "other.txt"]


@pytest.mark.parametrize("kwargs", [{}, {"max_ratio": 0, "max_size": 10 * 2**20}])
def test_tar_bomb_is_stopped_early_naming_the_archive(tmp_path, kwargs):
    path = bomb(tmp_path / "bomb.tar.bz2")
    assert os.path.getsize(path) < 1000
    started = time.monotonic()
    with pytest.raises(UnpackError, match="bomb.tar.bz2") as raised:
        unpack(path, "tar", delete=True, **kwargs)
    assert time.monotonic() - started < 1.0, "stopped early, not after expanding everything"
    assert "expand" in str(raised.value)
    assert os.listdir(tmp_path) == ["bomb.tar.bz2"], "nothing written, the archive kept"


def test_bzip_bomb_is_stopped_at_the_cap(tmp_path):
    path = tmp_path / "zeros.bin.bz2"
    path.write_bytes(bz2.compress(bytes(20 * 2**20)))
    with pytest.raises(UnpackError, match="zeros.bin.bz2"):
        unpack(str(path), "bzip", max_ratio=100, max_size=10 * 2**30)
    assert os.listdir(tmp_path) == ["zeros.bin.bz2"]
    assert unpack(str(path), "bzip", max_ratio=0, max_size=0) == [str(tmp_path / "zeros.bin")]


def test_client_refuses_the_bomb_and_unpacks_a_genuine_tar(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    for name in ("src", "dst"):
        (tmp_path / name).mkdir()
    bad = bomb(tmp_path / "src" / "bomb.tar.bz2")
    good = tmp_path / "src" / "good.tar"
    with tarfile.open(good, "w") as archive:
        add(archive, "good.txt", b"genuine")
    with RogueServer() as provider:
        config = load(write(tmp_path / "client.ini", f"""
            [chain]
            providers = 127.0.0.1:{provider.publisher.port}
            destination = file://{tmp_path / 'dst'}/
            topic = /test/files
            publish_port = 0
            publish_address = 127.0.0.1
            nameservers = False
            catch_up = False
            compression = tar
            delete = True
            unpack_max_ratio = 50
            unpack_max_size = 100 MiB
        """), "client")
        assert (config.chains[0].unpack_max_ratio, config.chains[0].unpack_max_size) == (50, 100 * 2**20)
        client = Client(config, state=StateStore(None))
        with running(client), Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                        "/test") as seen:
            time.sleep(1.0)  # slow joiner
            provider.announce(bad)
            provider.announce(str(good))
            wait_for(lambda: seen.finals(), what="the genuine tar unpacked and published")
            assert client.health()["ok"]
    assert (tmp_path / "dst" / "good.txt").read_bytes() == b"genuine"
    assert sorted(os.listdir(tmp_path / "dst")) == ["bomb.tar.bz2", "good.txt"]
    assert [m.data["uid"] for m in seen.finals()] == ["good.txt"]
    assert any("bomb.tar.bz2" in r.getMessage() and "expand" in r.getMessage() for r in caplog.records)
