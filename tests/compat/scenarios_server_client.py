"""Server and client scenarios of the differential suite (data only; run by ``harness.run_groups``).

Each scenario gets its own server chain (section = scenario id, topic ``/compat/<id>/files``, origin
``${src}/{platform_name}_{number:03d}.dat`` unless it says otherwise) and, when ``client`` is set, its own client
chain delivering into ``${dst}`` (see ``harness.Scenario``). Groups share one server and one client process per
implementation. ``Difference`` entries are the deliberate differences listed in docs/compatibility.md.
"""

from __future__ import annotations

import bz2
import io
import tarfile

from tests.compat.harness import Difference, Group, Request, Scenario, content, sha256_bytes


def sha(name: str, size: int = 2000) -> str:
    """sha256 of a dropped file, for the expected outcomes of ours."""
    return sha256_bytes(content(name, size))


def bzipped(name: str) -> tuple:
    return (name, bz2.compress(content(name[:-4])))


def tarred(name: str, members) -> tuple:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as archive:
        for member in members:
            data = content(member)
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return (name, stream.getvalue())


GROUPS = [
    Group("file"),
    Group("client"),
    Group("ftp_sftp", stagger=0.8),
    Group("scp_s3"),
    Group("requests"),
    Group("backlog", server_args=(), startup=7.0),
    Group("standalone"),
]

CONFINED = ("security: our server serves only files it announced, under the origin directory "
            "(0.19 checks the base name only, reference §7.17)")

PROVIDER_TOPIC = ("a provider's `/topic` suffix is honoured (this chain follows /compat/whatever, where nothing "
                  "is announced); 0.19 strips it and follows the chain topic (reference §7.5)")
FILE_DEST = "destination = file://${dst}"
FTP = ("login = ${ftp_user}:${ftp_password}\nftp_root = ${ftp_root}\n"
       "destination = ftp://127.0.0.1:${ftp_port}/${ftp_dst}")
SFTP_DEST = "destination = sftp://${ssh_user}@127.0.0.1:${ssh_port}${dst}"
SCP_DEST = "destination = scp://${ssh_user}@127.0.0.1:${ssh_port}${dst}"
S3_DEST = "destination = s3://${bucket}/${s3_dst}"


def delivered(tag: str, subdir, count: int = 2, start: int = 100) -> dict:
    """Expected destination tree: ``subdir/<tag>_NNN.dat`` (``subdir`` may be a function of the file name)."""
    found = {}
    for number in range(start, start + count):
        name = f"{tag}_{number:03d}.dat"
        directory = subdir(name) if callable(subdir) else subdir
        found[f"{directory}/{name}" if directory else name] = sha(name)
    return found


DIRECTORY_RULE = ("no data loss: a client destination always names a directory (0.19's client creates it and "
                  "publishes join(path, uid)); 0.19's server writes every file *as* the last path component "
                  "(S3 object, plain path, or `sub` when create_target_directory is false), each overwriting the "
                  "previous, and the published URIs name nothing")
SFTP_BROKEN = ("0.19's SftpMover puts to the destination path itself: a directory (every client destination, "
               "since its client publishes join(path, uid)) fails with 'Failure', so 0.19 delivers nothing by sftp")
MATRIX = [  # (variant, destination suffix, directory under the destination root, client extra, mkdirs)
    ("slash", "/", "", "", ()),
    ("noslash_missing", "/sub/deeper", "sub/deeper", "", ()),
    ("noslash_existing", "/exist", "exist", "", ("exist",)),
    ("slash_missing", "/new/dir/", "new/dir", "", ()),
    ("tpl_platform", "/{platform_name}", "<tag>", "", ()),
    ("tpl_platform_slash", "/x/{platform_name}/", "x/<tag>", "", ()),
    ("tpl_uid", "/{uid}", None, "", ()),
    ("ctd_false_existing", "/exist", "exist", "\ncreate_target_directory = False", ("exist",)),
    ("ctd_false_missing", "/sub", "sub", "\ncreate_target_directory = False", ()),
]
FTP_BROKEN = ("0.19's client creates the destination directory under ftp_root, then its server STORs the file to "
              "that directory's path: '550 Is a directory', nothing delivered; ours delivers into the directory")
FTP_BROKEN_VARIANTS = {"noslash_missing", "noslash_existing", "tpl_platform", "tpl_uid", "ctd_false_existing"}
S3_DIFFERENT = {"noslash_missing", "noslash_existing", "tpl_platform", "tpl_uid", "ctd_false_existing"}


def matrix(scheme: str, client_dest: str, server: str = "", dest: str = "local", group: str = "remote"):
    """The destination matrix of one scheme: trailing slash, none, existing, missing, templates, no creation."""
    found = []
    for variant, suffix, subdir, extra, mkdirs in MATRIX:
        if scheme == "s3" and variant == "ctd_false_missing":
            continue  # create_target_directory is not used for S3: the same as ctd_false_existing
        sid = f"{scheme}_{variant}"
        tag = sid.replace("_", "").upper()
        where = (lambda name: name) if subdir is None else subdir.replace("<tag>", tag)
        expected = delivered(tag, where)
        kwargs = dict(server=server, client=client_dest + suffix + extra, drop=2, dest=dest, group=group,
                      mkdirs=mkdirs)
        if scheme == "sftp":
            kwargs.update(ours_only=SFTP_BROKEN, expected={"files": expected, "finals": 2})
        elif scheme == "ftp" and variant in FTP_BROKEN_VARIANTS:
            kwargs.update(ours_only=FTP_BROKEN, expected={"files": expected, "finals": 2})
        elif (scheme == "s3" and variant in S3_DIFFERENT) or variant == "ctd_false_missing":
            kwargs["differences"] = (Difference("files", DIRECTORY_RULE, ours=expected),)
        found.append(Scenario(sid, **kwargs))
    return found


XRIT_STANDIN = ("xritdecompressor", """
    #!/bin/sh
    # stand-in for EUMETSAT's xRITDecompress: writes <name without C_>__ into the current directory
    name=$(basename "$1")
    { printf 'DECOMPRESSED'; cat "$1"; } > "${name%C_}__"
""")

SCENARIOS = [
    # ---- destination matrix on every scheme --------------------------------------------------------------------
    *matrix("file", "destination = file://${dst}", group="file"),
    *matrix("ftp", FTP, dest="ftp", group="ftp_sftp"),
    *matrix("sftp", SFTP_DEST, server="${sftp_params}", group="ftp_sftp"),
    *matrix("scp", SCP_DEST, server="${scp_params}", group="scp_s3"),
    *matrix("s3", S3_DEST, server="${s3_params}", dest="s3", group="scp_s3"),
    Scenario("file_plain_path", client="destination = ${dst}/plain", drop=2, group="file",
             differences=(Difference("files", DIRECTORY_RULE, ours=delivered("FILEPLAINPATH", "plain")),)),
    Scenario("scp_deprecated_key", server="ssh_key_filename = ${ssh_key}", client=SCP_DEST + "/", drop=1, group="scp_s3"),
    Scenario("sftp_use_tmp", server="${sftp_params}\nconnection_parameters__use_tmp_on_transfer = True",
             client=SFTP_DEST + "/", drop=2, group="ftp_sftp", ours_only=SFTP_BROKEN,
             expected={"files": delivered("SFTPUSETMP", ""), "finals": 2}),
    Scenario("ftp_use_tmp", server="connection_parameters__use_tmp_on_transfer = true", client=FTP + "/", drop=2,
             dest="ftp", group="ftp_sftp"),

    # ---- server keys ---------------------------------------------------------------------------------------------
    Scenario("srv_info_lists", server="info = sensor=avhrr/3;stations=kiruna,tromso;level=0", client="", drop=2,
             group="file"),
    Scenario("srv_origin_time_fields", server="origin = ${src}/{platform_name}_{start_time:%Y%m%d%H%M}.dat",
             client="", drop=("${tag}_202401011200.dat", "${tag}_202401011215.dat"), group="file"),
    Scenario("srv_origin_mismatch_ignored", client="", drop=("${tag}_100.dat", "${tag}-x.txt", "other.dat"),
             expect=1, announce=1, group="file"),
    Scenario("srv_empty_file_ignored", client="", drop=(("${tag}_100.dat", 0), "${tag}_101.dat"), expect=1,
             announce=1, group="file"),
    Scenario("srv_delete_remove_delay", server="delete = True\nremove_delay = 1", client="", drop=2, settle=3.0,
             aspects=("files", "client", "server", "source"), group="file"),
    Scenario("srv_no_delete_keeps_source", server="delete = False", client="", drop=1,
             aspects=("files", "client", "server", "source"), group="file"),
    Scenario("srv_compression_bzip", server="origin = ${src}/{platform_name}_{number:03d}.dat.bz2\n"
             "compression = bzip\nworking_directory = ${work}", client="",
             drop=(bzipped("SRVCOMPRESSIONBZIP_100.dat.bz2"), bzipped("SRVCOMPRESSIONBZIP_101.dat.bz2")), group="file",
             ours_only="0.19 announces the decompressed X.dat but refuses its push ('not reachable': the name does "
                       "not match the origin's *.dat.bz2), so server-side bzip never delivers",
             expected={"files": delivered("SRVCOMPRESSIONBZIP", ""), "finals": 2}),
    Scenario("srv_watchdog_timeout_key", server="watchdog_timeout = 0.5", client="", drop=1, group="file"),
    Scenario("srv_default_section_keys", server="connection_uptime = 5\nreq_timeout = 2\ntransfer_req_timeout = 20",
             client="", drop=1, group="file"),
    Scenario("srv_publisher_port_ignored", server="publisher_port = 9999\npublish_port = 9998", client="", drop=1,
             group="file"),

    # ---- client keys ---------------------------------------------------------------------------------------------
    Scenario("cl_replace_mda", server="info = sensor=avhrr;variant=DR", client="sensor = avhrr/3\n"
             "variant = DR:direct_readout|GDS:global", drop=2, group="client"),
    Scenario("cl_backup_targets", client="backup_targets = backup1 backup2", drop=1, group="client"),
    Scenario("cl_heartbeat_off", client="heartbeat = False", drop=1, group="client"),
    Scenario("cl_heartbeat_alarm", client="heartbeat_alarm_scale = 10", drop=1, group="client"),
    Scenario("cl_timeouts", client="req_timeout = 2\ntransfer_req_timeout = 20", drop=1, group="client"),
    Scenario("cl_processing_delay", client="processing_delay = 0.3", drop=2, group="client"),
    Scenario("cl_topic_prefix", client="topic = /compat/cl_topic_prefix", drop=1, group="client"),
    Scenario("cl_provider_topic_suffix", client="providers = 127.0.0.1:${publish_port}/compat/whatever", drop=1,
             group="client",
             differences=(Difference("files", PROVIDER_TOPIC, ours={}), Difference("client", PROVIDER_TOPIC, ours=[]))),
    Scenario("cl_two_providers_one_dead", client="providers = 127.0.0.1:${publish_port} 127.0.0.1:9",
             drop=1, group="client"),
    Scenario("cl_working_directory_key", client="working_directory = ${work}", drop=1, group="client"),
    Scenario("cl_unpack_bzip", server="origin = ${src}/{platform_name}_{number:03d}.dat.bz2",
             client="compression = bzip", drop=(bzipped("CLUNPACKBZIP_100.dat.bz2"),), group="client"),
    Scenario("cl_unpack_bzip_delete", server="origin = ${src}/{platform_name}_{number:03d}.dat.bz2",
             client="compression = bzip\ndelete = True", drop=(bzipped("CLUNPACKBZIPDELETE_100.dat.bz2"),), group="client"),
    Scenario("cl_unpack_bzip_block_size", server="origin = ${src}/{platform_name}_{number:03d}.dat.bz2",
             client="compression = bzip\nblock_size = 100", drop=(bzipped("CLUNPACKBZIPBLOCKSIZE_100.dat.bz2"),), group="client"),
    Scenario("cl_unpack_tar_dataset", server="origin = ${src}/{platform_name}_{number:03d}.tar",
             client="compression = tar", drop=(tarred("${tag}_100.tar", ["a.dat", "b.dat"]),), group="client"),
    Scenario("cl_unpack_tar_single", server="origin = ${src}/{platform_name}_{number:03d}.tar",
             client="compression = tar\ndelete = True", drop=(tarred("${tag}_100.tar", ["only.dat"]),),
             group="client"),
    Scenario("cl_unpack_xrit", server="origin = ${src}/H-000-{platform_name}-{segment}-C_",
             client="compression = xrit\nxritdecompressor = ${bin}/xritdecompressor",
             drop=("H-000-${tag}-000001-C_", "H-000-${tag}-000002-C_"), scripts=(XRIT_STANDIN,), group="client"),
    Scenario("cl_unpack_xrit_delete", server="origin = ${src}/H-000-{platform_name}-{segment}-C_",
             client="compression = xrit\ndelete = True\nxritdecompressor = ${bin}/xritdecompressor",
             drop=("H-000-${tag}-000001-C_",), scripts=(XRIT_STANDIN,), group="client"),
    Scenario("cl_unpack_xrit_uncompressed", server="origin = ${src}/H-000-{platform_name}-{segment}-{suffix}",
             client="compression = xrit\nxritdecompressor = ${bin}/xritdecompressor",
             drop=("H-000-${tag}-000001-__",), scripts=(XRIT_STANDIN,), group="client"),

    # ---- requests: replies to ping/info/ack/unknown/push -----------------------------------------------------------
    Scenario("req_ping_station", server="station = kiruna", requests=(Request("ping", {}, after=0),),
             group="requests"),
    Scenario("req_ping_default_station", requests=(Request("ping", {}, subject="ping/pong", after=0),),
             group="requests"),
    Scenario("req_unknown_type", requests=(Request("foo", {"a": 1}, after=0),), group="requests"),
    Scenario("req_not_a_message", requests=(Request(None, "hello", after=0),), group="requests",
             aspects=("replies",),
             differences=(Difference("replies", "a payload that is no posttroll message gets an err reply; 0.19 "
                                     "logs it and never answers, so the requester hangs until its timeout",
                                     ours=[("err",)]),)),
    Scenario("req_info_own_chain", drop=2, requests=(Request("info", {"max_count": 10}, delay=0.5),),
             group="requests"),
    Scenario("req_info_other_topic", drop=1, group="requests",
             requests=(Request("info", {}, subject="/compat/nothing/here", delay=0.5),)),
    Scenario("req_ack_announced", drop=1, group="requests",
             requests=(Request("ack", {"uri": "${src}/${tag}_100.dat", "uid": "${tag}_100.dat"}, delay=0.3),)),
    Scenario("req_ack_no_data", drop=1, group="requests", requests=(Request("ack", None, delay=0.3),)),
    Scenario("req_ack_foreign_basename", drop=1, group="requests",
             requests=(Request("ack", {"uri": "/etc/passwd", "uid": "passwd"}, delay=0.3),)),
    Scenario("req_push_announced", drop=1, group="requests", aspects=("files", "server", "replies"),
             requests=(Request("push", {"uri": "${src}/${tag}_100.dat", "uid": "${tag}_100.dat",
                                        "destination": "file://${host}${dst}/"}, delay=0.3),)),
    Scenario("req_push_rel_path", drop=1, group="requests", aspects=("files", "server", "replies"),
             requests=(Request("push", {"uri": "${src}/${tag}_100.dat", "uid": "${tag}_100.dat", "path": "sub/dir",
                                        "destination": "file://${host}${dst}/rel/"}, delay=0.3),)),
    Scenario("req_push_dataset", drop=2, group="requests", aspects=("files", "server", "replies"),
             requests=(Request("push", {"dataset": [{"uri": "${src}/${tag}_100.dat", "uid": "${tag}_100.dat"},
                                                    {"uri": "${src}/${tag}_101.dat", "uid": "${tag}_101.dat"}],
                                        "destination": "file://${host}${dst}/ds/"}, after=2, delay=0.3),)),
    Scenario("req_push_without_uri", group="requests", aspects=("replies",),
             requests=(Request("push", {"destination": "file://${dst}/"}, after=0),),
             differences=(Difference("replies", "0.19 answers a push without uri with the bare string 'None', "
                                     "not a message (reference §7.9); ours replies err", ours=[("err",)]),)),
    Scenario("req_push_without_destination", drop=1, group="requests", aspects=("files", "replies"),
             requests=(Request("push", {"uri": "${src}/${tag}_100.dat", "uid": "${tag}_100.dat"}, delay=0.3),)),
    Scenario("req_push_missing_file", drop=1, group="requests", aspects=("files", "replies"),
             requests=(Request("push", {"uri": "${src}/${tag}_999.dat", "uid": "${tag}_999.dat",
                                        "destination": "file://${host}${dst}/"}, delay=0.3),)),
    Scenario("req_push_pattern_mismatch", drop=1, group="requests", aspects=("files", "replies"),
             requests=(Request("push", {"uri": "/etc/passwd", "uid": "passwd",
                                        "destination": "file://${host}${dst}/"}, delay=0.3),)),
    Scenario("req_push_unsupported_scheme", drop=1, group="requests", aspects=("files", "replies"),
             requests=(Request("push", {"uri": "${src}/${tag}_100.dat", "uid": "${tag}_100.dat",
                                        "destination": "gopher://${host}${dst}/"}, delay=0.3),)),
    Scenario("req_push_unannounced_outside_origin", drop=1, group="requests", aspects=("files", "replies"),
             extra=(("elsewhere/${tag}_100.dat", 2000),),
             requests=(Request("push", {"uri": "${base}/elsewhere/${tag}_100.dat", "uid": "${tag}_100.dat",
                                        "destination": "file://${host}${dst}/"}, delay=0.3),),
             differences=(Difference("replies", CONFINED, ours=[("err",)]),
                          Difference("files", CONFINED, ours={}))),

    # ---- backlog: files present at start --------------------------------------------------------------------------
    Scenario("backlog_announced", present=2, client="", group="backlog"),
    Scenario("backlog_and_new", present=1, drop=1, client="", group="backlog"),
    Scenario("backlog_server_only", present=2, group="backlog", aspects=("server",)),
    Scenario("nobacklog_present_ignored", present=2, drop=1, client="", expect=1, announce=1, group="file"),

    # ---- standalone mode (no request_port): fsspec announcements --------------------------------------------------
    Scenario("standalone_file", omit=("request_port", "request_address"), server="info = sensor=avhrr",
             drop=2, group="standalone", aspects=("server",)),
    Scenario("standalone_fields", omit=("request_port", "request_address"),
             server="origin = ${src}/{platform_name}_{start_time:%Y%m%d%H%M}.dat",
             drop=("${tag}_202401011200.dat",), group="standalone", aspects=("server",)),
    Scenario("standalone_unpack_tar", omit=("request_port", "request_address"),
             server="origin = ${src}/{platform_name}_{number:03d}.tar\nunpack = tar",
             drop=(tarred("${tag}_100.tar", ["a.dat", "b.dat"]),), group="standalone", aspects=("server",)),
]
