"""connection_parameters -> TransferOptions: INI strings coerced, unknown S3 keys rejected."""

import pytest

from trollmoves.errors import PermanentTransferError
from trollmoves.movers import S3_ALLOWED_SETTINGS, TransferOptions
from trollmoves.movers.options import InvalidSettingError
from trollmoves.movers.s3 import S3Mover


def test_defaults_follow_the_spec():
    options = TransferOptions.from_attrs(None)
    assert options.use_tmp and options.tmp_prefix == "." and options.checksum == "xxh3_128"
    assert options.connection_uptime == 30.0 and options.verify


def test_ini_strings_are_coerced():
    options = TransferOptions.from_attrs({
        "connection_uptime": "45", "use_tmp_on_transfer": "False", "verify": "no", "num_ssh_retries": "5",
        "ssh_connection_timeout": "2.5", "scpclient_timeout_seconds": "7", "buffer_size": "4M",
        "openssh_threshold": "64MiB", "checksum": "SHA-256", "ssh_key_filename": "~/.ssh/id_a",
        "ssh_private_key_file": "/k/b", "hardlink": "0"})
    assert options.connection_uptime == 45.0 and not options.use_tmp and not options.verify
    assert options.retries == 4 and options.connect_timeout == 2.5 and options.timeout == 7.0
    assert options.buffer_size == 4 << 20 and options.openssh_threshold == 64 << 20
    assert options.checksum == "sha256" and not options.hardlink
    assert options.ssh_key_files[1] == "/k/b" and not options.ssh_key_files[0].startswith("~")


@pytest.mark.parametrize(("attrs", "key"), [
    ({"verify": "maybe"}, "verify"), ({"connection_uptime": "soon"}, "connection_uptime"),
    ({"checksum": "crc7"}, "checksum")])
def test_bad_values_name_the_key(attrs, key):
    with pytest.raises(InvalidSettingError, match=key):
        TransferOptions.from_attrs(attrs)


def test_none_values_are_unset():
    assert TransferOptions.from_attrs({"ssh_key_filename": None, "connection_uptime": None}).ssh_key_files == ()


def test_empty_prefix_and_suffix_with_tmp_on_is_an_error():
    with pytest.raises(InvalidSettingError, match="tmp_prefix"):
        TransferOptions.from_attrs({"tmp_prefix": ""})
    assert not TransferOptions.from_attrs({"tmp_prefix": "", "use_tmp_on_transfer": "false"}).use_tmp


def test_unknown_s3_setting_is_an_error_naming_it():
    options = TransferOptions.from_attrs({"endpoint_url": "http://x", "endpoit_url": "http://typo"})
    with pytest.raises(InvalidSettingError, match="endpoit_url") as err:
        S3Mover.check_options(options)
    assert isinstance(err.value, (PermanentTransferError, ValueError))


def test_s3_accepts_0_19_settings_and_other_movers_keys():
    attrs = {key: None for key in S3_ALLOWED_SETTINGS}
    attrs.update({"client_kwargs": {"region_name": "x"}, "profile": "p", "connection_uptime": "30",
                  "ssh_key_filename": "/nonexistent"})
    S3Mover.check_options(TransferOptions.from_attrs(attrs))


def test_attrs_are_not_mutated_and_secrets_not_in_repr():
    attrs = {"password": "hunter2", "secret": "s3cr3t", "client_kwargs": {"region_name": "x"}}
    before = repr(attrs)
    options = TransferOptions.from_attrs(attrs)
    assert repr(attrs) == before
    assert "hunter2" not in repr(options) and "s3cr3t" not in repr(options)
