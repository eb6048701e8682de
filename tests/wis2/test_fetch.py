"""The WIS2 downloader against a real HTTP server on 127.0.0.1 (and real FTP/SFTP servers).

What a user sees is asserted: the bytes at the target, what is (not) left in the directory, the
error's reason/transient flag/text, and how many requests the server got.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.wis2.httpserver import start_http
from trollmoves.wis2.fetch import (
    MAX_NAME_BYTES, FetchError, fetch, integrity_method, remove_file, safe_local_name, store_content,
)

DATA = os.urandom(300_000) + b"end"
FAST = {"backoff": 0.01, "max_backoff": 0.05}


@pytest.fixture
def http(tmp_path):
    server = start_http(tmp_path / "served", slow_seconds=5)
    yield server
    server.stop()


@pytest.fixture
def dest(tmp_path):
    return tmp_path / "dest"


def listing(directory) -> list[str]:
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def b64(method: str, data: bytes) -> str:
    return base64.b64encode(hashlib.new(method, data).digest()).decode()


# ----------------------------------------------------------------------------------------------
# good downloads


@pytest.mark.parametrize("method", ["sha512", "sha256"])
def test_good_file_is_stored_identical_and_verified(http, dest, method):
    href = http.put("in/data.bin", DATA)
    digest = hashlib.new(method, DATA).digest()
    result = fetch(href, str(dest / "data.bin"), length=len(DATA), integrity_method=method,
                   integrity_digest=digest, chunk_size=4096)
    assert (dest / "data.bin").read_bytes() == DATA
    assert listing(dest) == ["data.bin"]  # no temporary left
    assert (result.path, result.size, result.method, result.digest, result.attempts) == (
        str(dest / "data.bin"), len(DATA), method, digest, 1)
    assert result.duration >= 0
    assert http.hits("in/data.bin") == 1


@pytest.mark.parametrize("spelling", ["SHA-512", "sha-512", "sha_512", "sha512"])
def test_integrity_spellings_and_base64_text_are_accepted(http, dest, spelling):
    href = http.put("f.bin", DATA)
    result = fetch(href, str(dest / "f.bin"), integrity_method=spelling, integrity_digest=b64("sha512", DATA))
    assert result.method == "sha512"
    assert (dest / "f.bin").read_bytes() == DATA


def test_sha3_and_no_verification_and_empty_file(http, dest):
    href = http.put("empty", b"")
    result = fetch(href, str(dest / "sub" / "empty"), length=0, integrity_method="sha3-256",
                   integrity_digest=b64("sha3_256", b""))
    assert (dest / "sub" / "empty").read_bytes() == b""
    assert result.method == "sha3_256"
    plain = fetch(http.put("plain", b"abc"), str(dest / "plain"))
    assert (plain.method, plain.digest, plain.size) == (None, None, 3)


def test_unknown_integrity_method_is_refused_before_downloading(http, dest):
    href = http.put("f.bin", DATA)
    with pytest.raises(FetchError) as info:
        fetch(href, str(dest / "f.bin"), integrity_method="crc32", integrity_digest=b"1234")
    assert info.value.reason == "integrity" and not info.value.transient
    assert http.hits("f.bin") == 0
    assert integrity_method("SHA3-512") == "sha3_512"


def test_existing_file_is_replaced_by_a_verified_download(http, dest):
    dest.mkdir()
    (dest / "f.bin").write_bytes(b"old")
    fetch(http.put("f.bin", DATA), str(dest / "f.bin"), length=len(DATA))
    assert (dest / "f.bin").read_bytes() == DATA
    assert listing(dest) == ["f.bin"]


def test_stale_temporary_from_a_killed_run_is_overwritten(http, dest):
    dest.mkdir()
    (dest / ".f.bin.part").write_bytes(b"half of an earlier attempt" * 1000)
    fetch(http.put("f.bin", DATA), str(dest / "f.bin"), length=len(DATA))
    assert listing(dest) == ["f.bin"]
    assert (dest / "f.bin").read_bytes() == DATA


def test_credentials_in_href_are_sent_as_basic_auth_and_never_shown(http, dest):
    http.put("private.bin", DATA)
    href = http.url("private.bin").replace("http://", "http://alice:s3cr3t-pw@")
    fetch(href, str(dest / "private.bin"))
    expected = "Basic " + base64.b64encode(b"alice:s3cr3t-pw").decode()
    assert http.headers("private.bin")["Authorization"] == expected
    with pytest.raises(FetchError) as info:
        fetch(href.replace("private.bin", "missing.bin"), str(dest / "missing.bin"))
    assert "s3cr3t-pw" not in str(info.value)
    assert "alice@127.0.0.1" in str(info.value)


# ----------------------------------------------------------------------------------------------
# HTTP errors, retries, cancel


def test_404_is_permanent_and_leaves_nothing(http, dest):
    href = http.url("nothere.bin")
    with pytest.raises(FetchError) as info:
        fetch(href, str(dest / "nothere.bin"), **FAST)
    err = info.value
    assert (err.reason, err.transient, err.status) == ("http_status", False, 404)
    assert href in str(err) and str(dest / "nothere.bin") in str(err)
    assert listing(dest) == []
    assert http.hits("nothere.bin") == 1


def test_error_page_with_status_is_never_stored(http, dest):
    http.put("f.bin", DATA)
    http.script("f.bin", [], then=503)
    with pytest.raises(FetchError) as info:
        fetch(http.url("f.bin"), str(dest / "f.bin"), retries=2, **FAST)
    assert (info.value.reason, info.value.transient, info.value.status) == ("http_status", True, 503)
    assert http.hits("f.bin") == 3
    assert listing(dest) == []


def test_503_twice_then_ok_is_stored_after_three_requests(http, dest):
    http.put("f.bin", DATA)
    http.script("f.bin", [503, 503, "ok"])
    retried = []
    result = fetch(http.url("f.bin"), str(dest / "f.bin"), length=len(DATA),
                   on_retry=lambda err, delay: retried.append((err.status, delay)), backoff=0.01, max_backoff=1)
    assert (dest / "f.bin").read_bytes() == DATA
    assert http.hits("f.bin") == 3
    assert result.attempts == 3
    assert retried == [(503, 0.01), (503, 0.02)]  # exponential backoff


def test_429_with_retry_after_is_retried_after_the_servers_delay(http, dest):
    http.put("f.bin", DATA)
    http.script("f.bin", [(429, {"Retry-After": "1"}), "ok"])
    delays = []
    fetch(http.url("f.bin"), str(dest / "f.bin"), on_retry=lambda err, delay: delays.append(delay),
          backoff=0.01, max_backoff=30)
    assert delays == [1.0]
    assert http.hits("f.bin") == 2
    assert (dest / "f.bin").read_bytes() == DATA


def test_retry_after_is_capped_at_max_backoff(http, dest):
    http.put("f.bin", DATA)
    http.script("f.bin", [(503, {"Retry-After": "3600"}), "ok"])
    delays = []
    fetch(http.url("f.bin"), str(dest / "f.bin"), on_retry=lambda err, delay: delays.append(delay),
          backoff=0.01, max_backoff=0.05)
    assert delays == [0.05]


def test_other_4xx_are_not_retried(http, dest):
    http.put("f.bin", DATA)
    http.script("f.bin", [403, "ok"])
    with pytest.raises(FetchError) as info:
        fetch(http.url("f.bin"), str(dest / "f.bin"), **FAST)
    assert (info.value.status, info.value.transient) == (403, False)
    assert http.hits("f.bin") == 1


def test_truncated_body_is_retried(http, dest):
    http.put("f.bin", DATA)
    http.script("f.bin", ["truncate", "ok"])
    fetch(http.url("f.bin"), str(dest / "f.bin"), **FAST)
    assert (dest / "f.bin").read_bytes() == DATA
    assert http.hits("f.bin") == 2


def test_always_truncated_body_fails_transient_without_a_file(http, dest):
    http.put("f.bin", DATA)
    http.script("f.bin", [], then="truncate")
    with pytest.raises(FetchError) as info:
        fetch(http.url("f.bin"), str(dest / "f.bin"), retries=2, **FAST)
    assert (info.value.reason, info.value.transient) == ("network", True)
    assert "connection closed after" in str(info.value)
    assert http.hits("f.bin") == 3
    assert listing(dest) == []


def test_dropped_connection_is_retried(http, dest):
    http.put("f.bin", DATA)
    http.script("f.bin", ["drop", "ok"])
    fetch(http.url("f.bin"), str(dest / "f.bin"), **FAST)
    assert (dest / "f.bin").read_bytes() == DATA
    assert http.hits("f.bin") == 2


def test_refused_connection_is_a_transient_network_error(dest):
    from tests.servers import free_port

    with pytest.raises(FetchError) as info:
        fetch(f"http://127.0.0.1:{free_port()}/f.bin", str(dest / "f.bin"), retries=1, **FAST)
    assert (info.value.reason, info.value.transient) == ("network", True)
    assert listing(dest) == []


def test_stalled_server_times_out(http, dest):
    http.put("f.bin", DATA)
    http.script("f.bin", ["slow"])
    with pytest.raises(FetchError) as info:
        fetch(http.url("f.bin"), str(dest / "f.bin"), timeout=0.3, retries=0)
    assert (info.value.reason, info.value.transient) == ("timeout", True)
    assert listing(dest) == []


def test_cancel_during_backoff_returns_cancelled(http, dest):
    http.put("f.bin", DATA)
    http.script("f.bin", [], then=503)
    cancel = threading.Event()

    def stop_when_asked():
        while http.hits("f.bin") < 1 and not cancel.wait(0.01):
            pass
        cancel.set()

    stopper = threading.Thread(target=stop_when_asked)
    stopper.start()
    try:
        with pytest.raises(FetchError) as info:
            # a 10-minute backoff: only the Event can end the wait before pytest's timeout
            fetch(http.url("f.bin"), str(dest / "f.bin"), retries=3, backoff=600, max_backoff=600, cancel=cancel)
    finally:
        cancel.set()
        stopper.join()
    assert (info.value.reason, info.value.transient) == ("cancelled", True)
    assert http.hits("f.bin") == 1
    assert listing(dest) == []


def test_already_cancelled_sends_no_request(http, dest):
    http.put("f.bin", DATA)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(FetchError) as info:
        fetch(http.url("f.bin"), str(dest / "f.bin"), cancel=cancel)
    assert info.value.reason == "cancelled"
    assert http.hits("f.bin") == 0


# ----------------------------------------------------------------------------------------------
# verification failures


def test_wrong_length_fails_permanent_and_keeps_the_older_file(http, dest):
    dest.mkdir()
    (dest / "f.bin").write_bytes(b"older version")
    http.put("f.bin", DATA)
    with pytest.raises(FetchError) as info:
        fetch(http.url("f.bin"), str(dest / "f.bin"), length=len(DATA) + 1, **FAST)
    assert (info.value.reason, info.value.transient) == ("length", False)
    assert (dest / "f.bin").read_bytes() == b"older version"
    assert listing(dest) == ["f.bin"]
    assert http.hits("f.bin") == 1


def test_wrong_digest_fails_permanent_and_keeps_the_older_file(http, dest):
    dest.mkdir()
    (dest / "f.bin").write_bytes(b"older version")
    http.put("f.bin", DATA)
    with pytest.raises(FetchError) as info:
        fetch(http.url("f.bin"), str(dest / "f.bin"), length=len(DATA), integrity_method="sha512",
              integrity_digest=hashlib.sha512(b"something else").digest(), **FAST)
    assert (info.value.reason, info.value.transient) == ("integrity", False)
    assert str(dest / "f.bin") in str(info.value)
    assert (dest / "f.bin").read_bytes() == b"older version"
    assert listing(dest) == ["f.bin"]
    assert http.hits("f.bin") == 1


def test_digest_that_is_not_base64_is_an_integrity_error(http, dest):
    with pytest.raises(FetchError) as info:
        fetch(http.put("f.bin", DATA), str(dest / "f.bin"), integrity_method="sha512", integrity_digest="n0t b64!")
    assert info.value.reason == "integrity"
    assert http.hits("f.bin") == 0


# ----------------------------------------------------------------------------------------------
# hrefs and names


@pytest.mark.parametrize("href", ["file:///etc/passwd", "gopher://127.0.0.1/1", "/etc/passwd", "data:,hello",
                                  "http:///no-host", "http://127.0.0.1:notaport/x", "mailto:a@example.org"])
def test_unsupported_or_malformed_hrefs_are_refused(dest, href):
    with pytest.raises(FetchError) as info:
        fetch(href, str(dest / "x"))
    assert (info.value.reason, info.value.transient) == ("href", False)
    assert listing(dest) == []


@pytest.mark.parametrize(("href", "data_id", "expected"), [
    ("https://example.org/out/file.nc", "wis2/x/uid", "file.nc"),
    ("../../etc/passwd", "d", "passwd"),
    ("https://example.org/a/../../etc/passwd", "d", "passwd"),
    ("/abs", "d", "abs"),
    ("https://example.org/.hidden", "d", "hidden"),
    ("https://example.org/..", "wis2/x/data/core/uid-1", "uid-1"),
    ("https://example.org/%2e%2e", "wis2/x/data/core/uid-2", "uid-2"),
    ("https://example.org/dir/%2e%2e%2fetc%2fpasswd", "d", "_etc_passwd"),
    ("https://example.org/dir/", "wis2/x/data/core/uid-3/", "uid-3"),
    ("", "wis2/x/data/core/uid-4", "uid-4"),
    ("https://example.org/a%00b%0Ac", "d", "a_b_c"),
    ("https://example.org/caf%C3%A9%20file.nc?x=1#frag", "d", "café file.nc"),
    ("https://example.org/..%5C..%5Cwin.ini", "d", "_.._win.ini"),
])
def test_safe_local_name(href, data_id, expected):
    assert safe_local_name(href, data_id) == expected


@pytest.mark.parametrize(("href", "data_id"), [("", ""), ("https://example.org/", "..."), ("/..", "../.."),
                                               ("https://example.org/%2e", "wis2/x/.")])
def test_safe_local_name_refuses_when_nothing_is_left(href, data_id):
    with pytest.raises(FetchError) as info:
        safe_local_name(href, data_id)
    assert info.value.reason == "href"


def test_long_names_are_cut_keeping_the_extension():
    name = safe_local_name("https://example.org/" + "é" * 300 + ".nc", "d")
    assert name.endswith(".nc")
    assert len(name.encode()) <= MAX_NAME_BYTES
    name.encode("utf-8")  # no half character left


@settings(max_examples=400, deadline=None)
@given(href=st.one_of(st.text(), st.text().map(lambda t: "https://example.org/" + t)), data_id=st.text())
def test_safe_local_name_never_returns_a_dangerous_name(href, data_id):
    try:
        name = safe_local_name(href, data_id)
    except FetchError as err:
        assert err.reason == "href"
        return
    assert name and name not in (".", "..")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".")
    assert not any(ord(char) < 32 or 0x7f <= ord(char) < 0xa0 for char in name)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES


# ----------------------------------------------------------------------------------------------
# inline content and deletions


def test_store_content_verified(dest):
    result = store_content(b"inline bytes", str(dest / "inline.txt"), length=12, integrity_method="sha512",
                           integrity_digest=b64("sha512", b"inline bytes"))
    assert (dest / "inline.txt").read_bytes() == b"inline bytes"
    assert (result.size, result.method, result.digest) == (12, "sha512", hashlib.sha512(b"inline bytes").digest())


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"length": 5}, "length"),
    ({"length": 50}, "length"),
    ({"integrity_method": "sha256", "integrity_digest": hashlib.sha256(b"other").digest()}, "integrity"),
])
def test_store_content_mismatch_keeps_the_older_file(dest, kwargs, reason):
    dest.mkdir()
    (dest / "inline.txt").write_bytes(b"older")
    with pytest.raises(FetchError) as info:
        store_content(b"inline bytes", str(dest / "inline.txt"), **kwargs)
    assert (info.value.reason, info.value.transient) == (reason, False)
    assert (dest / "inline.txt").read_bytes() == b"older"
    assert listing(dest) == ["inline.txt"]


def test_remove_file(tmp_path):
    target = tmp_path / "gone.bin"
    target.write_bytes(b"x")
    assert remove_file(str(target)) is True
    assert not target.exists()
    assert remove_file(str(target)) is False
    (tmp_path / "adir").mkdir()
    with pytest.raises(FetchError) as info:
        remove_file(str(tmp_path / "adir"))
    assert info.value.reason == "io" and str(tmp_path / "adir") in str(info.value)
    assert (tmp_path / "adir").is_dir()


def test_unwritable_target_is_an_io_error(http, tmp_path):
    (tmp_path / "taken").write_bytes(b"a file where a directory should be")
    with pytest.raises(FetchError) as info:
        fetch(http.put("f.bin", DATA), str(tmp_path / "taken" / "f.bin"))
    assert (info.value.reason, info.value.transient) == ("io", False)
    assert str(tmp_path / "taken") in str(info.value)


# ----------------------------------------------------------------------------------------------
# FTP and SFTP with real servers


def test_ftp_download_and_missing_file(ftp_server, dest):
    (ftp_server.root / "wis2-ftp.bin").write_bytes(DATA)
    base = f"ftp://{ftp_server.user}:{ftp_server.password}@{ftp_server.host}:{ftp_server.port}"
    result = fetch(f"{base}/wis2-ftp.bin", str(dest / "wis2-ftp.bin"), length=len(DATA),
                   integrity_method="sha512", integrity_digest=hashlib.sha512(DATA).digest())
    assert (dest / "wis2-ftp.bin").read_bytes() == DATA
    assert result.size == len(DATA)
    with pytest.raises(FetchError) as info:
        fetch(f"{base}/missing.bin", str(dest / "missing.bin"), **FAST)
    assert (info.value.reason, info.value.transient) == ("network", False)
    assert ftp_server.password not in str(info.value)
    assert listing(dest) == ["wis2-ftp.bin"]


def test_sftp_download_and_missing_file(sshd_server, dest):
    from trollmoves.movers.options import TransferOptions

    source = sshd_server.root / "wis2-sftp.bin"
    source.write_bytes(DATA)
    options = TransferOptions(known_hosts=str(sshd_server.known_hosts), ssh_key_files=(str(sshd_server.client_key),),
                              ssh_allow_agent=False)
    base = f"sftp://{sshd_server.user}@{sshd_server.host}:{sshd_server.port}"
    result = fetch(f"{base}{source}", str(dest / "wis2-sftp.bin"), length=len(DATA), integrity_method="sha512",
                   integrity_digest=hashlib.sha512(DATA).digest(), ssh_options=options)
    assert (dest / "wis2-sftp.bin").read_bytes() == DATA
    assert result.size == len(DATA)
    with pytest.raises(FetchError) as info:
        fetch(f"{base}{sshd_server.root}/missing.bin", str(dest / "missing.bin"), ssh_options=options, **FAST)
    assert (info.value.reason, info.value.transient) == ("network", False)
    assert listing(dest) == ["wis2-sftp.bin"]


def test_requests_name_trollmoves_and_carry_extra_headers(http, dest):
    href = http.put("f.bin", b"abc")
    fetch(href, str(dest / "f.bin"), headers={"X-Test": "1"})
    seen = http.headers("f.bin")
    assert seen["User-Agent"].startswith("trollmoves/") and seen["X-Test"] == "1"
