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


def test_multipart_upload_round_trips_with_part_checksums_and_a_streaming_hash(
        s3_server, s3_bucket, tmp_path, monkeypatch):
    """Three 5 MiB parts and a tail: the object is the file, the checksum of the whole file was
    computed while the parts were read, every part went out as a bytes-like body (not a BytesIO)
    with our CRC32, and the server's own composite CRC32 (computed from the parts it stored) is
    the one our part checksums make."""
    import base64
    import os
    import zlib

    import xxhash

    from trollmoves.movers import TransferService
    from trollmoves.movers import s3 as s3_mover

    client, bucket = s3_bucket
    target = S3Target(unique_prefix(), s3_server, client, bucket)
    part = 5 << 20
    data = os.urandom(3 * part + 12345)
    (tmp_path / "multi.bin").write_bytes(data)
    bodies = []

    def spy(request, **kwargs):
        s3_mover_body_as_bytes(request, **kwargs)
        bodies.append(type(request.data))

    s3_mover_body_as_bytes = s3_mover._body_as_bytes
    monkeypatch.setattr(s3_mover, "_body_as_bytes", spy)
    attrs = {**target.attrs(), "s3_multipart_chunksize": "5M", "s3_multipart_threshold": "5M",
             "checksum": "xxh3_128", "max_concurrency": "3"}
    with TransferService() as service:
        result = service.transfer(tmp_path / "multi.bin", target.url("multi/"), attrs)
    assert target.read("multi/multi.bin") == data
    assert result.checksum.method == "xxh3_128" and result.checksum.value == xxhash.xxh3_128_hexdigest(data)
    # Full parts go from the connection's reused buffers, the short last one as its own bytes;
    # none as botocore's BytesIO (hashed and sent in copies).
    assert sorted(body.__name__ for body in bodies) == ["bytearray"] * 3 + ["bytes"]
    head = client.head_object(Bucket=bucket, Key=f"{target.prefix}/multi/multi.bin", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-4")
    crcs = b"".join(zlib.crc32(data[i:i + part]).to_bytes(4, "big") for i in range(0, len(data), part))
    expected = base64.b64encode(zlib.crc32(crcs).to_bytes(4, "big")).decode()
    assert head["ChecksumCRC32"].split("-")[0] == expected


def test_crc32_header_is_botocores():
    """Our part checksum is the value botocore would have computed and sent."""
    import os

    from botocore.httpchecksum import Crc32Checksum

    from trollmoves.movers.s3 import crc32_header

    for data in (b"", b"x", os.urandom(1 << 20), os.urandom((3 << 20) + 7)):
        reference = Crc32Checksum()
        reference.update(data)
        assert crc32_header(data) == reference.b64digest()


def test_body_as_bytes_hands_back_the_same_bytes():
    import io

    from botocore.awsrequest import AWSRequest

    from trollmoves.movers.s3 import _body_as_bytes

    data = bytes(range(256)) * 4096
    wrapped = io.BytesIO(data)
    wrapped.read(100)  # botocore's checksum passes move the position; the body is still all of it
    request = AWSRequest(method="PUT", url="http://example.invalid/b/k", data=wrapped)
    _body_as_bytes(request)
    assert request.data is data and request.body is data
    other = AWSRequest(method="PUT", url="http://example.invalid/b/k", data=b"abc")
    _body_as_bytes(other)
    assert other.data == b"abc"


def test_part_buffers_kept_by_the_connection_never_leak_into_the_next_file(s3_server, s3_bucket, tmp_path):
    """The connection reuses its part buffers from file to file: a shorter file after a longer one
    (and an exact multiple of the part size after a file with a tail) arrives byte for byte."""
    import os

    from trollmoves.movers import TransferService

    client, bucket = s3_bucket
    target = S3Target(unique_prefix(), s3_server, client, bucket)
    part = 5 << 20
    files = {"long.bin": os.urandom(4 * part + 777), "short.bin": os.urandom(2 * part + 5),
             "exact.bin": os.urandom(2 * part), "long2.bin": os.urandom(3 * part + 1)}
    attrs = {**target.attrs(), "s3_multipart_chunksize": "5M", "s3_multipart_threshold": "5M",
             "max_concurrency": "2"}
    with TransferService() as service:
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
            service.transfer(tmp_path / name, target.url("reuse/"), attrs)
        assert service.stats().opened == 1
    for name, data in files.items():
        assert target.read(f"reuse/{name}") == data, name
