"""The conformance suite for ``file://`` and bare paths on the local file system."""

import os

import pytest
from tests.movers.conformance import MoverConformance, unique_prefix
from tests.movers.targets import LocalTarget


class TestFileMover(MoverConformance):
    @pytest.fixture(params=["hardlink", "copy"])
    def target(self, request, tmp_path_factory):
        target = LocalTarget(unique_prefix(), tmp_path_factory.mktemp("dest"))
        if request.param == "copy":
            target.attrs = lambda: {**LocalTarget.attrs(target), "hardlink": "false"}
        return target


def test_bare_path_and_hard_link_by_default(tmp_path):
    from trollmoves.movers import move_it

    (tmp_path / "src.dat").write_bytes(b"payload")
    used = move_it(str(tmp_path / "src.dat"), f"{tmp_path}/out/")
    assert used.path == f"{tmp_path}/out/src.dat"
    assert os.stat(tmp_path / "out" / "src.dat").st_ino == os.stat(tmp_path / "src.dat").st_ino
    assert sorted(os.listdir(tmp_path / "out")) == ["src.dat"]


def test_copy_when_hardlink_is_off(tmp_path):
    from trollmoves.movers import TransferService

    (tmp_path / "src.dat").write_bytes(b"payload")
    with TransferService() as service:
        service.transfer(tmp_path / "src.dat", f"{tmp_path}/out/", {"hardlink": "false"})
    assert os.stat(tmp_path / "out" / "src.dat").st_ino != os.stat(tmp_path / "src.dat").st_ino


def test_unwritable_destination_is_permanent(tmp_path):
    from trollmoves.errors import PermanentTransferError
    from trollmoves.movers import TransferService

    (tmp_path / "src.dat").write_bytes(b"payload")
    (tmp_path / "afile").write_bytes(b"")
    with TransferService() as service, pytest.raises(PermanentTransferError, match="afile"):
        service.transfer(tmp_path / "src.dat", f"{tmp_path}/afile/sub/", {"retries": 5, "retry_delay": 60})


def test_0_19_class_api_copy_and_move(tmp_path):
    from trollmoves.movers import FileMover

    (tmp_path / "src.dat").write_bytes(b"payload")
    mover = FileMover(str(tmp_path / "src.dat"), f"file://{tmp_path}/dst/")
    result = mover.copy()
    assert mover.destination.path == f"{tmp_path}/dst/src.dat" and result.size == 7
    FileMover(str(tmp_path / "src.dat"), f"{tmp_path}/moved/").move()
    assert not (tmp_path / "src.dat").exists() and (tmp_path / "moved" / "src.dat").read_bytes() == b"payload"
