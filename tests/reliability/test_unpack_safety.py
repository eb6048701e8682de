"""Tar members never escape the destination: absolute paths, ``..``, symbolic and hard links, devices.

An archive with one unsafe member is refused as a whole, with an error naming the
member, and nothing of it is left behind: no member (not even the safe ones before the
bad one), no hidden work directory, nothing outside the destination. End to end, a
client with ``compression = tar`` reports the refusal and publishes no final message
for the archive.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile

import pytest

from tests.daemons.helpers import Collector, running, wait_for
from tests.reliability.helpers import (
    client_chain,
    in_process_client,
    in_process_server,
    server_chain,
    write_ini,
)
from tests.servers import free_port
from trollmoves.unpack import UnpackError, unpack


def add_file(archive: tarfile.TarFile, name: str, data: bytes = b"payload") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def add_special(archive: tarfile.TarFile, name: str, kind: bytes, target: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    archive.addfile(info)


def make_tar(path, members) -> str:
    with tarfile.open(path, "w") as archive:
        for member in members:
            member(archive)
    return str(path)


def everything_under(directory) -> list[str]:
    found = []
    for root, dirs, files in os.walk(directory):
        found += [os.path.relpath(os.path.join(root, n), directory) for n in dirs + files]
    return sorted(found)


@pytest.fixture
def dest(tmp_path):
    directory = tmp_path / "box" / "dest"
    directory.mkdir(parents=True)
    return directory


def unsafe_cases(tmp_path):
    outside = tmp_path / "box" / "escaped.txt"
    return {
        "absolute path": (lambda a: add_file(a, str(outside)), "absolute path"),
        "dot-dot": (lambda a: add_file(a, "../escaped.txt"), "escapes the destination"),
        "dot-dot inside a directory": (lambda a: add_file(a, "sub/../../escaped.txt"), "escapes the destination"),
        "symlink out": (lambda a: add_special(a, "link", tarfile.SYMTYPE, str(outside)), "links are not unpacked"),
        "relative symlink out": (lambda a: add_special(a, "link", tarfile.SYMTYPE, "../escaped.txt"),
                                 "links are not unpacked"),
        "hard link": (lambda a: add_special(a, "hard", tarfile.LNKTYPE, "good.txt"), "links are not unpacked"),
        "hard link out": (lambda a: add_special(a, "hard", tarfile.LNKTYPE, str(outside)), "links are not unpacked"),
        "device": (lambda a: add_special(a, "dev", tarfile.CHRTYPE), "not a regular file or directory"),
        "fifo": (lambda a: add_special(a, "fifo", tarfile.FIFOTYPE), "not a regular file or directory"),
    }


CASES = ["absolute path", "dot-dot", "dot-dot inside a directory", "symlink out", "relative symlink out", "hard link",
         "hard link out", "device", "fifo"]


@pytest.mark.parametrize("case", CASES)
def test_unsafe_member_refuses_the_whole_archive(case, tmp_path, dest):
    member, reason = unsafe_cases(tmp_path)[case]
    archive = make_tar(dest / "bundle.tar", [lambda a: add_file(a, "good.txt"), lambda a: add_file(a, "sub/ok.txt"),
                                             member, lambda a: add_file(a, "after.txt")])
    with pytest.raises(UnpackError, match=reason) as refused:
        unpack(archive, "tar", delete=True)
    assert "unsafe tar member" in str(refused.value)
    assert everything_under(dest) == ["bundle.tar"], "something of a refused archive was left behind"
    assert everything_under(tmp_path / "box") == ["dest", "dest/bundle.tar"], "something escaped the destination"


def test_symlink_then_write_through_it_is_refused(tmp_path, dest):
    outside = tmp_path / "box" / "outside-dir"
    outside.mkdir()
    archive = make_tar(dest / "bundle.tar", [lambda a: add_special(a, "d", tarfile.SYMTYPE, str(outside)),
                                             lambda a: add_file(a, "d/planted.txt")])
    with pytest.raises(UnpackError):
        unpack(archive, "tar")
    assert os.listdir(outside) == []
    assert everything_under(dest) == ["bundle.tar"]


def test_safe_archive_is_unpacked_atomically(dest):
    archive = make_tar(dest / "bundle.tar",
                       [lambda a: add_file(a, "one.txt", b"1"), lambda a: add_file(a, "sub/two.txt", b"2")])
    results = unpack(archive, "tar", delete=True)
    assert sorted(os.path.relpath(r, dest) for r in results) == ["one.txt", "sub/two.txt"]
    assert everything_under(dest) == ["one.txt", "sub", "sub/two.txt"]
    assert (dest / "sub" / "two.txt").read_bytes() == b"2"


@pytest.mark.timeout(60)
def test_client_refuses_an_unsafe_archive_end_to_end(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    server = in_process_server(write_ini(tmp_path / "server.ini", {"chain": {
        **server_chain(src, "/reliability/tar", free_port()), "origin": f"{src}/{{name}}.tar"}}))
    with running(server):
        client = in_process_client(write_ini(tmp_path / "client.ini", {"chain": client_chain(
            f"127.0.0.1:{server.publisher.port}", f"file://{dst}/", "/reliability/tar", compression="tar")}))
        with running(client), Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                        "/reliability") as seen:
            staging = tmp_path / "staging"
            staging.mkdir()
            make_tar(staging / "evil.tar", [lambda a: add_file(a, "fine.txt"), lambda a: add_file(a, "../escaped.txt")])
            os.replace(staging / "evil.tar", src / "evil.tar")
            make_tar(staging / "good.tar", [lambda a: add_file(a, "inside.txt")])
            os.replace(staging / "good.tar", src / "good.tar")
            wait_for(lambda: seen.finals(), timeout=20, what="the good archive's final message")
            wait_for(lambda: any("cannot unpack evil.tar" in r.getMessage() for r in caplog.records), timeout=10,
                     what="the refusal of the evil archive reported")
    refusal = next(r.getMessage() for r in caplog.records if "cannot unpack evil.tar" in r.getMessage())
    assert "'../escaped.txt'" in refusal and "escapes the destination" in refusal
    assert [m.data["uid"] for m in seen.finals()] == ["inside.txt"]
    assert not (tmp_path / "escaped.txt").exists()
    assert sorted(n for n in os.listdir(dst)) == ["evil.tar", "good.tar", "inside.txt"]
