"""S3 with boto3: one PUT for small files, a completed multipart upload for big ones.

Both commit atomically (an object appears whole or not at all), so no
temporary key or rename is needed; a failed multipart upload is aborted. The
key follows trollmoves 0.19's trailing-slash rule (``destination.s3_bucket_key``).

Settings are 0.19's ``S3_ALLOWED_SETTINGS`` (s3fs spellings) translated to boto3:
``key``/``secret``/``token``, ``profile``, ``endpoint_url``, ``client_kwargs``
(passed to ``boto3.client``), ``config_kwargs`` (botocore ``Config``),
``use_ssl``, ``anon``, ``requester_pays``, ``s3_additional_kwargs`` (extra
PutObject/CreateMultipartUpload arguments such as ``ACL``), ``max_concurrency``,
``s3_multipart_chunksize``/``default_block_size`` (part size),
``s3_multipart_threshold`` and ``s3_use_multipart``. s3fs cache settings are
accepted and ignored; a key known to no trollmoves mover is an error.
Without explicit credentials boto3's chain applies (environment, profile, ...).
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import zlib
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from trollmoves.errors import PermanentTransferError, TransferError, TransientTransferError
from trollmoves.movers.base import ATOMIC_PUT, REMOTE_CHECKSUM, REMOTE_SIZE, Connection, DriverCache
from trollmoves.movers.destination import Destination, s3_bucket_key
from trollmoves.movers.options import (
    S3_ALLOWED_SETTINGS,
    InvalidSettingError,
    TransferOptions,
    to_bool,
    to_int,
    to_size,
)
from trollmoves.movers.per_file import PerFileMover
from trollmoves.movers.registry import missing_dependency
from trollmoves.movers.retry import classify, describe
from trollmoves.movers.source import Source

logger = logging.getLogger(__name__)

MiB = 1 << 20
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_THRESHOLD = 16 * MiB
DEFAULT_CONCURRENCY = 8
MIN_PART_SIZE = 5 * MiB

_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "BadDigest"}
_IGNORED_SETTINGS = {"default_fill_cache", "default_cache_type", "version_aware", "cache_regions",
                     "asynchronous", "session", "kwargs", "fixed_upload_size", "use_tmp_on_transfer",
                     "tmp_prefix", "s3_use_copy"}


def translate_s3_error(exc: BaseException, where: str, what: str) -> TransferError:
    """botocore's exceptions as Transient/PermanentTransferError (5xx and throttling are transient)."""
    if isinstance(exc, TransferError):
        return exc
    try:
        import botocore.exceptions as bex
    except ModuleNotFoundError:  # pragma: no cover
        return classify(exc, where, what)
    if isinstance(exc, bex.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        text = f"{what}: {code or status} {describe(error.get('Message', '') or exc)}"
        if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
            return TransientTransferError(text, where, exc)
        return PermanentTransferError(text, where, exc)
    if isinstance(exc, (bex.EndpointConnectionError, bex.ConnectionClosedError, bex.ConnectTimeoutError,
                        bex.ReadTimeoutError, bex.HTTPClientError)):
        return TransientTransferError(f"{what}: {describe(exc)}", where, exc)
    if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError, bex.ProfileNotFound,
                        bex.ParamValidationError, bex.NoRegionError)):
        return PermanentTransferError(f"{what}: {describe(exc)}", where, exc)
    return classify(exc, where, what)


class S3Settings:
    """The mover's view of the S3 settings, validated once."""

    def __init__(self, options: TransferOptions):
        settings = dict(options.s3)
        if "endpoint_url" in settings and "endpoint_url" not in settings.get("client_kwargs", {}):
            settings.setdefault("client_kwargs", {})
            settings["client_kwargs"] = {**settings["client_kwargs"], "endpoint_url": settings["endpoint_url"]}
        self.client_kwargs: dict[str, Any] = dict(settings.get("client_kwargs") or {})
        self.config_kwargs: dict[str, Any] = dict(settings.get("config_kwargs") or {})
        self.extra_args: dict[str, Any] = dict(settings.get("s3_additional_kwargs") or {})
        if to_bool("requester_pays", settings.get("requester_pays", False)):
            self.extra_args["RequestPayer"] = "requester"
        if "use_ssl" in settings:
            self.client_kwargs["use_ssl"] = to_bool("use_ssl", settings["use_ssl"])
        self.anon = to_bool("anon", settings.get("anon", False))
        self.key = settings.get("key")
        self.secret = settings.get("secret")
        self.token = settings.get("token")
        self.profile = settings.get("profile")
        self.concurrency = max(1, to_int("max_concurrency", settings.get("max_concurrency", DEFAULT_CONCURRENCY)))
        part = settings.get("s3_multipart_chunksize", settings.get("default_block_size", DEFAULT_PART_SIZE))
        self.part_size = max(MIN_PART_SIZE, to_size("s3_multipart_chunksize", part))
        self.threshold = to_size("s3_multipart_threshold", settings.get("s3_multipart_threshold",
                                                                         max(DEFAULT_THRESHOLD, self.part_size)))
        if to_bool("s3_use_multipart", settings.get("s3_use_multipart", False)):
            self.threshold = 0
        # Per-part CRC32 (what boto3's upload_file asks for): the server combines part checksums
        # instead of checksumming the whole object again at completion (moto: 1.2 s instead of
        # 2.9-10 s to complete 256 MiB here).
        # Servers that reject checksum headers are configured with
        # config_kwargs = {"request_checksum_calculation": "when_required"}.
        wanted = self.config_kwargs.get("request_checksum_calculation", "when_supported")
        self.multipart_args = {"ChecksumAlgorithm": "CRC32"} if wanted != "when_required" else {}
        ignored = sorted(set(settings) & _IGNORED_SETTINGS)
        if ignored:
            logger.debug("S3 settings accepted but not used: %s", ", ".join(ignored))

    def identity(self) -> tuple:
        """Connection-affecting settings, for the pool key digest."""
        return (self.key, self.secret, self.token, self.profile, self.anon,
                sorted(self.client_kwargs.items(), key=str), sorted(self.config_kwargs.items(), key=str))


def make_client(settings: S3Settings, options: TransferOptions, cache: DriverCache | None = None):
    """A boto3 S3 client with trollmoves' timeouts; credentials never logged.

    The boto3 session (with its parsed service model, ~0.1 s to load) is kept in
    the service's ``cache`` per profile; clients are created under its lock because
    boto3 sessions are not thread-safe.
    """
    try:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config
    except ModuleNotFoundError as err:
        raise missing_dependency(err.name or "boto3", "S3 transfers") from None
    config_kwargs = {
        "connect_timeout": options.connect_timeout,
        "read_timeout": options.timeout,
        "retries": {"mode": "standard", "total_max_attempts": 2},
        "max_pool_connections": max(10, settings.concurrency + 2),
        **settings.config_kwargs,
    }
    if settings.anon:
        config_kwargs["signature_version"] = UNSIGNED
    cache = cache or DriverCache()
    session = cache.get(("boto3.Session", settings.profile),
                        lambda: boto3.session.Session(profile_name=settings.profile))
    kwargs = dict(settings.client_kwargs)
    for name, value in (("aws_access_key_id", settings.key), ("aws_secret_access_key", settings.secret),
                        ("aws_session_token", settings.token)):
        if value:
            kwargs.setdefault(name, value)
    with cache.lock:
        client = session.client("s3", config=Config(**config_kwargs), **kwargs)
    for operation in ("PutObject", "UploadPart"):
        client.meta.events.register(f"before-sign.s3.{operation}", _body_as_bytes,
                                    unique_id=f"trollmoves-body-as-bytes-{operation}")
    return client


def _body_as_bytes(request, **_kwargs) -> None:
    """Hand botocore's ``BytesIO`` wrapper of our ``bytes`` body back as the ``bytes`` themselves.

    botocore wraps a ``bytes`` body in ``BytesIO``; it then hashes it for the SigV4 payload
    (plain http only) in 1 MiB reads, each a copy, and urllib3 sends it in 16 KiB reads, each
    a copy and a trip through Python (with ten upload threads, a GIL hand-off every 16 KiB).
    As ``bytes`` the body is hashed in one call and sent with one ``sendall``, both without
    the GIL and without a copy. ``getvalue()`` of an untouched ``BytesIO`` is the object it
    was made from, so nothing is copied here either.
    """
    body = request.data
    if isinstance(body, io.BytesIO):
        request.data = body.getvalue()


def crc32_header(body: bytes | bytearray) -> str:
    """The ``x-amz-checksum-crc32`` value of ``body`` (base64 of the big-endian CRC32)."""
    return base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode("ascii")


class S3Connection(Connection):
    """A boto3 client bound to one bucket; uploads commit atomically."""

    capabilities = frozenset({ATOMIC_PUT, REMOTE_SIZE, REMOTE_CHECKSUM})

    def __init__(self, endpoint: Destination, options: TransferOptions, client, settings: S3Settings):
        super().__init__(endpoint, options)
        self.client = client
        self.settings = settings
        self.bucket = endpoint.host
        self._head: tuple[str, dict] | None = None
        self._part_buffers: list[bytearray] = []

    def translate(self, exc: BaseException, what: str, path: str | None = None) -> TransferError:
        return translate_s3_error(exc, self.endpoint.safe_url(path), what)

    def upload(self, source: Source, remote: str) -> int:
        self._head = None
        if source.size < self.settings.threshold:
            return self.call("upload failed", remote, self._put, source, remote)
        return self.call("multipart upload failed", remote, self._multipart, source, remote)

    def _put(self, source: Source, key: str) -> int:
        body = source.read_bytes(source.size)
        source.check_cancel()
        count = len(body)
        if count != source.size:
            raise TransientTransferError(f"source {source.path} changed size while being read",
                                         self.endpoint.safe_url(key))
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **self.settings.extra_args)
        return count

    def _multipart(self, source: Source, key: str) -> int:
        settings = self.settings
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **settings.multipart_args,
                                                        **settings.extra_args)["UploadId"]
        extra = {k: v for k, v in settings.extra_args.items() if k in ("RequestPayer", "SSECustomerAlgorithm",
                                                                         "SSECustomerKey", "SSECustomerKeyMD5")}
        try:
            total, parts = self._send_parts(source, key, upload_id, {**extra, **settings.multipart_args})
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts}, **extra)
        except BaseException:
            self._abort(key, upload_id, extra)
            raise
        return total

    def _send_parts(self, source: Source, key: str, upload_id: str, extra: dict) -> tuple[int, list[dict]]:
        """Read parts in order (hashing them), upload up to ``concurrency`` at once.

        At most ``concurrency + 1`` parts are in memory, in buffers the connection keeps from
        part to part and from file to file (it is lent to one transfer at a time, and the pool
        closes it, buffers and all, after ``connection_uptime`` idle): a new 8 MiB ``bytes``
        per part cost the kernel's page faults and zeroing of fresh memory every time (16,384
        faults and ~10 % of the client's CPU per 256 MiB here), a kept buffer only the copy.
        """
        settings = self.settings
        cancel = threading.Event()
        results: dict[int, dict] = {}
        in_flight: dict[Future, bytearray] = {}
        free = self._part_buffers
        total = 0

        def send(number: int, body: bytes | bytearray) -> None:
            if cancel.is_set():
                return
            # The part's CRC32 from the bytes in hand (zlib, no GIL, no copy) instead of
            # botocore's pass over a BytesIO in 1 MiB copies.
            checksum = {"ChecksumCRC32": crc32_header(body)} if "ChecksumAlgorithm" in extra else {}
            response = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                               PartNumber=number, Body=body, **extra, **checksum)
            results[number] = {"PartNumber": number, "ETag": response["ETag"],
                               **{k: v for k, v in response.items() if k.startswith("Checksum")}}

        try:
            with ThreadPoolExecutor(settings.concurrency, thread_name_prefix="trollmoves-s3-part") as pool:
                try:
                    number = 0
                    while True:
                        buffer = free.pop() if free else bytearray(settings.part_size)
                        count = source.read_into(buffer)
                        if count == 0 and number > 0:
                            free.append(buffer)
                            break
                        number += 1
                        total += count
                        # A short (last) part goes as a copy of its bytes: a body is sent whole.
                        body = buffer if count == len(buffer) else bytes(memoryview(buffer)[:count])
                        in_flight[pool.submit(send, number, body)] = buffer
                        # One part more than there are workers waits ready in the queue, so that a
                        # worker never idles while this thread reads and hashes the next part.
                        while len(in_flight) > settings.concurrency:
                            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                            for future in done:
                                free.append(in_flight.pop(future))
                                future.result()
                        if count < settings.part_size:
                            break
                    for future in list(in_flight):
                        future.result()
                except BaseException:
                    cancel.set()
                    raise
        finally:
            # The pool has joined its threads: no part is being sent from these buffers any more.
            free.extend(in_flight.values())
        return total, [results[n] for n in sorted(results)]

    def _abort(self, key: str, upload_id: str, extra: dict) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id, **extra)
        except Exception as err:  # noqa: BLE001 - the upload error matters more
            logger.warning("Could not abort multipart upload to %s: %s", self.endpoint.safe_url(key),
                           describe(err))

    def _head_object(self, key: str) -> dict:
        if self._head is None or self._head[0] != key:
            head = self.call("HEAD failed", key, lambda: self.client.head_object(Bucket=self.bucket, Key=key))
            self._head = (key, head)
        return self._head[1]

    def size(self, path: str) -> int | None:
        return int(self._head_object(path)["ContentLength"])

    def remote_checksum(self, path: str, method: str) -> str | None:
        """The ETag of a single-part, unencrypted upload is the MD5 of the object."""
        if method != "md5":
            return None
        etag = str(self._head_object(path).get("ETag", "")).strip('"')
        if "-" in etag or self._head_object(path).get("ServerSideEncryption") == "aws:kms":
            return None
        return etag or None

    def rename(self, old: str, new: str) -> None:  # pragma: no cover - ATOMIC_PUT: never called
        raise PermanentTransferError("S3 has no rename", self.endpoint.safe_url(new))

    def remove(self, path: str) -> None:
        self.call("delete failed", path, lambda: self.client.delete_object(Bucket=self.bucket, Key=path))

    def _mkdirs(self, path: str) -> None:
        """Object stores have no directories."""

    def close(self) -> None:
        self._part_buffers.clear()
        try:
            self.client.close()
        except Exception as err:  # noqa: BLE001 - closing is best effort
            logger.debug("Error closing S3 client: %s", err)


class S3Mover(PerFileMover):
    """``s3://bucket/prefix``: trailing slash keeps the file name, else the last part names the object."""

    schemes = ("s3",)

    @classmethod
    def connect(cls, endpoint: Destination, options: TransferOptions,
                cache: DriverCache | None = None) -> Connection:
        settings = S3Settings(options)
        try:
            client = make_client(settings, options, cache)
        except Exception as exc:
            raise translate_s3_error(exc, endpoint.safe_url(""), "cannot create S3 client") from exc
        return S3Connection(endpoint, options, client, settings)

    @classmethod
    def remote_path(cls, endpoint: Destination, source: str) -> str:
        return s3_bucket_key(endpoint, source)[1]

    @classmethod
    def pool_key(cls, endpoint: Destination, options: TransferOptions) -> tuple:
        settings = S3Settings(options)
        return ("s3", endpoint.host, None, settings.key,
                options.fingerprint(settings.identity(), options.connect_timeout, options.timeout))

    @classmethod
    def check_options(cls, options: TransferOptions) -> None:
        if options.unknown:
            raise InvalidSettingError(
                f"connection_parameters: unknown S3 setting(s) {', '.join(options.unknown)}; "
                f"allowed: {', '.join(sorted(S3_ALLOWED_SETTINGS))} and trollmoves' common settings")
        S3Settings(options)

