"""The conformance suite for ``s3://`` against the session's real moto_server."""

import pytest
from tests.movers.conformance import MoverConformance, unique_prefix
from tests.movers.targets import S3Target


@pytest.fixture(scope="module")
def s3_bucket(s3_server):
    import boto3

    client = boto3.client("s3", **s3_server.boto3_kwargs())
    client.create_bucket(Bucket="trollmoves-conformance")
    yield client, "trollmoves-conformance"
    client.close()


class TestS3Mover(MoverConformance):
    @pytest.fixture
    def target(self, s3_server, s3_bucket):
        client, bucket = s3_bucket
        return S3Target(unique_prefix(), s3_server, client, bucket)


def test_cancelled_multipart_upload_is_aborted(s3_server, s3_bucket, tmp_path):
    import threading

    from trollmoves.errors import TransientTransferError
    from trollmoves.movers import TransferService

    client, bucket = s3_bucket
    target = S3Target(unique_prefix(), s3_server, client, bucket)
    (tmp_path / "big.bin").write_bytes(b"\0" * (12 << 20))
    cancel = threading.Event()
    attrs = {**target.attrs(), "s3_use_multipart": "true", "s3_multipart_chunksize": "5M"}
    with TransferService(cancel=cancel) as service, pytest.raises(TransientTransferError):
        service.transfer(tmp_path / "big.bin", target.url("abort/"), attrs, progress=lambda done: cancel.set())
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=target.prefix).get("Uploads", [])
    assert uploads == [] and target.read("abort/big.bin") is None


def test_unknown_setting_fails_before_any_request(s3_server, s3_bucket, tmp_path):
    from trollmoves.movers import TransferService
    from trollmoves.movers.options import InvalidSettingError

    client, bucket = s3_bucket
    target = S3Target(unique_prefix(), s3_server, client, bucket)
    (tmp_path / "f").write_bytes(b"x")
    with TransferService() as service, pytest.raises(InvalidSettingError, match="acl_typo"):
        service.transfer(tmp_path / "f", target.url("u/"), {**target.attrs(), "acl_typo": "private"})
