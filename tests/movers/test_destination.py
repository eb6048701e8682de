"""URL parsing, the trailing-slash rule and the S3 key rule (pure functions)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trollmoves.errors import PermanentTransferError
from trollmoves.movers.destination import parse_destination, s3_bucket_key, target_path, temporary_path


@pytest.mark.parametrize(("url", "scheme", "host", "port", "user", "path"), [
    ("/data/out/", "file", "", None, None, "/data/out/"),
    ("relative/dir/", "file", "", None, None, "relative/dir/"),
    ("file:///data/out/x.dat", "file", "", None, None, "/data/out/x.dat"),
    ("file://otherhost/data/out/", "file", "", None, None, "/data/out/"),
    ("ftp://user:pw@ftp.example.org:2121/in/", "ftp", "ftp.example.org", 2121, "user", "/in/"),
    ("scp://me@host/dir/name", "scp", "host", None, "me", "/dir/name"),
    ("SFTP://Host.Example:22/x/", "sftp", "host.example", 22, None, "/x/"),
    ("s3://bucket/prefix/", "s3", "bucket", None, None, "/prefix/"),
])
def test_parse(url, scheme, host, port, user, path):
    dest = parse_destination(url)
    assert (dest.scheme, dest.host, dest.port, dest.user, dest.path) == (scheme, host, port, user, path)


def test_percent_encoded_credentials_are_decoded_and_never_shown():
    dest = parse_destination("ftp://us%40er:p%40ss%3Aword@host/dir/")
    assert (dest.user, dest.password) == ("us@er", "p@ss:word")
    for text in (str(dest), repr(dest), dest.safe_url(), dest.parse_result().geturl()):
        assert "p@ss" not in text and "p%40ss" not in text


def test_bad_port_is_permanent_and_secret_free():
    with pytest.raises(PermanentTransferError) as err:
        parse_destination("ftp://user:hunter2@host:notaport/dir/")
    assert "hunter2" not in str(err.value)


def test_rel_path_is_joined_like_0_19():
    assert parse_destination("file:///x/rel/", "sub/dir").path == "/x/rel/sub/dir"
    assert parse_destination("sftp://h/x", "y/").path == "/x/y/"


def test_backup_target_keeps_user_and_path():
    dest = parse_destination("scp://me:pw@primary:2222/dir/")
    backup = dest.with_target("backup.example:2200")
    assert (backup.host, backup.port, backup.user, backup.password, backup.path) == (
        "backup.example", 2200, "me", "pw", "/dir/")
    assert dest.with_target("other").port == 2222


@pytest.mark.parametrize(("path", "expected"), [
    ("/out/", "/out/file.dat"), ("", "file.dat"), ("/out/new.dat", "/out/new.dat")])
def test_trailing_slash_keeps_the_source_name(path, expected):
    assert target_path(path, "/src/file.dat") == expected


@pytest.mark.parametrize(("url", "key"), [
    ("s3://bucket/", "file.dat"),
    ("s3://bucket", "file.dat"),
    ("s3://bucket/dir/", "dir/file.dat"),
    ("s3://bucket/dir/sub/", "dir/sub/file.dat"),
    ("s3://bucket/dir/name.nc", "dir/name.nc"),
    ("s3://bucket/name.nc", "name.nc"),
])
def test_s3_key_rule(url, key):
    assert s3_bucket_key(parse_destination(url), "/src/file.dat") == ("bucket", key)


def test_temporary_name_is_beside_the_final_one():
    assert temporary_path("/a/b/f.dat", ".", "") == "/a/b/.f.dat"
    assert temporary_path("f.dat", "tmp-", ".part") == "tmp-f.dat.part"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=6, max_size=30))
def test_no_password_ever_printed(password):
    from urllib.parse import quote

    def printed(dest):
        return (str(dest), repr(dest), dest.safe_url("/x"), str(dest.parse_result()))

    dest = parse_destination(f"sftp://user:{quote(password, safe='')}@host:22/dir/")
    assert dest.password == password
    # the printed forms do not depend on the password at all (a substring test would fail on
    # passwords like "Destin" that occur in the fixed text)
    assert printed(dest) == printed(parse_destination("sftp://user:placeholder@host:22/dir/"))
    assert all("placeholder" not in text for text in printed(dest))
