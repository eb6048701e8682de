"""Differential scenarios for move_it, the dispatcher and the s3downloader (data only; see tools_runner.py).

Configs are written as a 0.19 user writes them (INI sections for move_it, YAML targets for the dispatcher, the
s3downloader template). Every move_it scenario runs with ``-p`` (so message shapes are compared everywhere)
and ``--disable-backlog``; every dispatcher scenario with ``-p PORT -n localhost``.

Behaviour of 0.19 these scenarios rely on (verified with its processes, see reference-0.19.md §1.5, §4, §7):
its move_it calls the movers without connection parameters and publishes ``join(destination path,
basename)`` whatever the mover wrote; a destination without trailing slash names the *file* for the file,
FTP, SCP, SFTP and S3 movers (the file mover copies into it when it is an existing directory); its SFTP
mover cannot write to a path ending in ``/`` and neither SFTP nor SCP create missing directories.
"""

from __future__ import annotations

import bz2
import datetime as dt

from tests.compat import harness
from tests.compat.harness import ANY, Difference
from tests.compat.tools_runner import FAILED, RUNNING, Feed, ToolScenario

NO_SLASH_URI = Difference(
    "messages",
    "0.19 publishes join(destination, basename) even when it wrote the file "
    "as the destination itself, a uri naming nothing; ours names the file",
)
NO_SLASH_RESOLVES = Difference(
    "uris_resolve", "every uri ours publishes names the delivered file", ours=[True]
)
EXIT_CODE = Difference(
    "exit",
    "0.19 dies with a Python traceback (exit 1); ours prints one line naming the "
    "file (and section/key) and exits 2, as for every config error",
    ours=2,
)


def sha(name: str, size: int = 2000) -> str:
    """sha256 of the deterministic content a scenario file ``name`` gets (tools_runner.write_source)."""
    return harness.sha256_bytes(harness.content(name, size))


def _resolving(count: int) -> list[bool]:
    return [True] * count


# --------------------------------------------------------------------------------------------------
# move_it
# --------------------------------------------------------------------------------------------------

MOVE_IT = [
    ToolScenario(
        "mi_file_slash_missing",
        "move_it",
        drop=("a.dat", "b.dat"),
        expect=2,
        config="destinations = file://${out}/new/dir/",
        doc="file:// destination with trailing slash, directories missing: both create them",
    ),
    ToolScenario(
        "mi_plainpath_slash",
        "move_it",
        drop=("a.dat",),
        expect=1,
        config="destinations = ${out}/plain/",
        doc="a plain path (no scheme) with trailing slash",
    ),
    ToolScenario(
        "mi_file_noslash_missing",
        "move_it",
        drop=("a.dat",),
        expect=1,
        config="destinations = file://${out}/named",
        differences=(NO_SLASH_URI, NO_SLASH_RESOLVES),
        doc="no trailing slash, nothing there: 0.19 writes the file as out/named",
    ),
    ToolScenario(
        "mi_file_noslash_existing",
        "move_it",
        drop=("a.dat",),
        expect=1,
        mkdirs=("${out}/exists",),
        config="destinations = file://${out}/exists",
        doc="no trailing slash, an existing directory: 0.19 copies into it",
    ),
    ToolScenario(
        "mi_ftp_slash",
        "move_it",
        drop=("a.dat",),
        expect=1,
        config="destinations = ${ftp}/in/",
        doc="FTP with trailing slash: directory created, original name kept",
    ),
    ToolScenario(
        "mi_ftp_noslash",
        "move_it",
        drop=("a.dat",),
        expect=1,
        config="destinations = ${ftp}/named",
        differences=(NO_SLASH_URI, NO_SLASH_RESOLVES),
        doc="FTP without trailing slash: 0.19 STORs the file as 'named'",
    ),
    ToolScenario(
        "mi_sftp_slash",
        "move_it",
        drop=("a.dat",),
        expect=1,
        expect_019=0,
        mkdirs=("${ssh_dir}/in",),
        config="destinations = ${sftp}/in/",
        differences=(
            Difference(
                "files",
                "0.19's SFTP mover puts to the directory path itself and fails "
                "('OSError: Failure'): the file is never delivered; ours delivers "
                "into the directory",
                ours={"ssh/in/a.dat": sha("a.dat")},
            ),
            Difference("messages", "0.19 publishes nothing (its copy failed)", ours=ANY),
            Difference("uris_resolve", "ours' message names the delivered file", ours=[True]),
        ),
        doc="SFTP with trailing slash (existing directory)",
    ),
    ToolScenario(
        "mi_sftp_noslash",
        "move_it",
        drop=("a.dat",),
        expect=1,
        config="destinations = ${sftp}/named",
        differences=(NO_SLASH_URI, NO_SLASH_RESOLVES),
        doc="SFTP without trailing slash: 0.19 writes the file as 'named'",
    ),
    ToolScenario(
        "mi_scp_slash_existing",
        "move_it",
        drop=("a.dat",),
        expect=1,
        mkdirs=("${ssh_dir}/in",),
        config="destinations = ${scp}/in/",
        doc="SCP into an existing directory",
    ),
    ToolScenario(
        "mi_scp_slash_missing",
        "move_it",
        drop=("a.dat",),
        expect=1,
        expect_019=0,
        config="destinations = ${scp}/new/",
        differences=(
            Difference(
                "files",
                "0.19's scp fails on a missing directory ('scp: …/new/: Is a "
                "directory'): nothing delivered; ours creates it",
                ours={"ssh/new/a.dat": sha("a.dat")},
            ),
            Difference("messages", "0.19 publishes nothing (its copy failed)", ours=ANY),
            Difference("uris_resolve", "ours' message names the delivered file", ours=[True]),
        ),
        doc="SCP with trailing slash, directory missing",
    ),
    ToolScenario(
        "mi_scp_noslash",
        "move_it",
        drop=("a.dat",),
        expect=1,
        config="destinations = ${scp}/named",
        differences=(NO_SLASH_URI, NO_SLASH_RESOLVES),
        doc="SCP without trailing slash: 0.19 writes the file as 'named'",
    ),
    ToolScenario(
        "mi_s3_slash",
        "move_it",
        drop=("a.dat",),
        expect=1,
        config="destinations = s3://${bucket}/prefix/",
        doc="S3 prefix with trailing slash: key prefix/a.dat",
    ),
    ToolScenario(
        "mi_s3_noslash",
        "move_it",
        drop=("a.dat",),
        expect=1,
        config="destinations = s3://${bucket}/prefix/name",
        differences=(NO_SLASH_URI, NO_SLASH_RESOLVES),
        doc="S3 without trailing slash: 0.19 writes the object prefix/name",
    ),
    ToolScenario(
        "mi_s3_bucket_root",
        "move_it",
        drop=("a.dat",),
        expect=1,
        config="destinations = s3://${bucket}/",
        doc="S3 bucket root with slash",
    ),
    ToolScenario(
        "mi_s3_bucket_only",
        "move_it",
        drop=("a.dat",),
        expect=1,
        config="destinations = s3://${bucket}",
        doc="S3 bucket without any path: the object keeps its name at the root",
    ),
    ToolScenario(
        "mi_multi_dest",
        "move_it",
        drop=("a.dat",),
        expect=4,
        config="destinations = ${out}/one/ file://${out}/two/ ${ftp}/three/ s3://${bucket}/four/",
        doc="several destinations: one copy and one message per destination",
    ),
    ToolScenario(
        "mi_publish_fields",
        "move_it",
        drop=("NOAA19_202401011200_12345.dat",),
        expect=1,
        config="""
                     origin = ${src}/{platform_name}_{start_time:%Y%m%d%H%M}_{orbit:05d}.dat
                     info = sensor=avhrr;stations=a,b
                     destinations = ${out}/
                 """,
        doc="-p message: info items and the fields parsed from the file name",
    ),
    ToolScenario(
        "mi_request_address",
        "move_it",
        drop=("a.dat",),
        expect=1,
        config="""
                     destinations = ${out}/
                     request_port = 9
                     request_address = 127.0.0.1
                 """,
        doc="request_port/request_address only go into the published message",
    ),
    ToolScenario(
        "mi_bzip",
        "move_it",
        drop=(("a.dat.bz2", bz2.compress(harness.content("a.dat", 2000))),),
        expect=1,
        expect_019=0,
        aspects=("files", "messages", "uris_resolve", "source", "work"),
        differences=(
            Difference(
                "messages",
                "0.19 parses the origin pattern against the decompressed file's path "
                "in its publish hook: ValueError, the copy is done but never announced",
                ours=[
                    (
                        "file",
                        "/compat/mi_bzip/in",
                        "a.dat",
                        "<root>/mi_bzip/out/a.dat",
                        ("name", "uid", "uri"),
                    )
                ],
            ),
            Difference("uris_resolve", "ours' message names the delivered file", ours=[True]),
        ),
        config="""
                     origin = ${src}/{name}.dat.bz2
                     compression = bzip
                     working_directory = ${work}
                     destinations = ${out}/
                 """,
        doc="compression = bzip: the decompressed file is copied, the temporary one removed",
    ),
    ToolScenario(
        "mi_xrit",
        "move_it",
        drop=("seg1-C_",),
        expect=1,
        expect_019=0,
        aspects=("files", "messages", "uris_resolve", "source", "work"),
        differences=(
            Difference(
                "messages",
                "0.19 parses the origin pattern against the decompressed file's path "
                "in its publish hook: ValueError, the copy is done but never announced",
                ours=[
                    (
                        "file",
                        "/compat/mi_xrit/in",
                        "seg1-__",
                        "<root>/mi_xrit/out/seg1-__",
                        ("name", "uid", "uri"),
                    )
                ],
            ),
            Difference("uris_resolve", "ours' message names the delivered file", ours=[True]),
        ),
        config="""
                     origin = ${src}/{name}-C_
                     compression = xrit
                     prog = ${xrit}
                     working_directory = ${work}
                     destinations = ${out}/
                 """,
        doc="compression = xrit with a stand-in decompressor: the '__' file is copied",
    ),
    ToolScenario(
        "mi_bzip_corrupt",
        "move_it",
        drop=(("bad.dat.bz2", b"not bzip2 data"),),
        expect=0,
        expect_019=1,
        aspects=("files", "messages", "source", "work"),
        differences=(
            Difference(
                "files",
                "0.19 logs the decompression error and copies the compressed file in "
                "place of the decompressed one; ours copies nothing and logs why",
                ours={},
            ),
            Difference("messages", "0.19 announces the compressed file; ours nothing", ours=[]),
        ),
        config="""
                     origin = ${src}/{name}.dat.bz2
                     compression = bzip
                     working_directory = ${work}
                     destinations = ${out}/
                 """,
        doc="a file that fails to decompress",
    ),
    ToolScenario(
        "mi_delete",
        "move_it",
        drop=("a.dat", "b.dat"),
        expect=2,
        config="""
                     destinations = ${out}/
                     delete = True
                 """,
        ours_only="0.19 removes the source, then raises KeyError 'delete_hook', which kills the "
        "chain's watcher (reference §7.3)",
        expected={
            "files": {"local/a.dat": sha("a.dat"), "local/b.dat": sha("b.dat")},
            "source": [],
            "uris_resolve": [True, True],
        },
        doc="delete = True: every file copied, then the source removed",
    ),
    ToolScenario(
        "mi_no_match",
        "move_it",
        drop=("a.dat", "a.txt", "b.dat.part"),
        expect=1,
        config="destinations = ${out}/",
        doc="files not matching origin are left alone",
    ),
    ToolScenario(
        "mi_disable_backlog",
        "move_it",
        present=("old.dat",),
        drop=("new.dat",),
        expect=1,
        config="destinations = ${out}/",
        doc="--disable-backlog: a file already present is not moved",
    ),
    ToolScenario(
        "mi_empty_file",
        "move_it",
        drop=(("empty.dat", 0), "a.dat"),
        expect=2,
        config="destinations = ${out}/",
        doc="an empty file is copied and announced too (move_it, unlike the server)",
    ),
]

# --------------------------------------------------------------------------------------------------
# dispatcher
# --------------------------------------------------------------------------------------------------


def _file(name: str, subject: str = "${topic}", **metadata) -> Feed:
    return Feed("file", {"uri": f"${{src}}/{name}", "uid": name, **metadata}, subject)


AVHRR = {"sensor": "avhrr", "platform_name": "NOAA-19"}
START = dt.datetime(2024, 1, 1, 12, 0)

DISPATCHER = [
    ToolScenario(
        "d_local_basename",
        "dispatcher",
        drop=("a.dat",),
        expect=1,
        feed=(_file("a.dat", **AVHRR),),
        config="""
                     host: ""
                     directory: ${out}/plain
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        doc="local target, no filepattern: the original base name",
    ),
    ToolScenario(
        "d_templates",
        "dispatcher",
        drop=("a.dat",),
        expect=1,
        feed=(_file("a.dat", start_time=START, orbit=123, format="nc", **AVHRR),),
        config="""
                     host: ""
                     directory: ${out}/{sensor}/{platform_name}
                     filepattern: "{platform_name}_{start_time:%Y%m%d_%H%M}_{orbit:05d}.{format}"
                     publish_topic: ${ptopic}/{platform_name}
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        doc="directory, filepattern and publish_topic composed from the metadata",
    ),
    ToolScenario(
        "d_topic_prefix",
        "dispatcher",
        drop=("a.dat", "b.dat", "c.dat"),
        expect=2,
        feed=(
            _file("a.dat", **AVHRR),
            _file("b.dat", "${topic}/sub", **AVHRR),
            _file("c.dat", "/compat/d_topic_prefix/other", **AVHRR),
        ),
        config="""
                     host: ""
                     directory: ${out}
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}, /compat/d_topic_prefix/unused]
                 """,
        doc="topics match subjects by prefix",
    ),
    ToolScenario(
        "d_cond_and",
        "dispatcher",
        drop=("a.dat", "b.dat", "c.dat"),
        expect=1,
        feed=(
            _file("a.dat", sensor="avhrr", product="ir"),
            _file("b.dat", sensor="avhrr", product="vis"),
            _file("c.dat", sensor="viirs", product="ir"),
        ),
        config="""
                     host: ""
                     directory: ${out}
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                         conditions:
                           - sensor: avhrr
                             product: ir
                 """,
        doc="keys of one condition set are AND-ed",
    ),
    ToolScenario(
        "d_cond_or_list",
        "dispatcher",
        drop=("a.dat", "b.dat", "c.dat"),
        expect=2,
        feed=(
            _file("a.dat", sensor="viirs", product="true_color"),
            _file("b.dat", sensor="viirs", product="overview"),
            _file("c.dat", sensor="avhrr", product="overview"),
        ),
        config="""
                     host: ""
                     directory: ${out}
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                         conditions:
                           - product: [green_snow, true_color]
                             sensor: viirs
                           - sensor: avhrr
                 """,
        doc="condition sets are OR-ed; a list value means membership",
    ),
    ToolScenario(
        "d_cond_except",
        "dispatcher",
        drop=("a.dat", "b.dat"),
        expect=1,
        feed=(
            _file("a.dat", sensor="avhrr", platform_name="NOAA-19"),
            _file("b.dat", sensor="avhrr", platform_name="NOAA-15"),
        ),
        config="""
                     host: ""
                     directory: ${out}
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                         conditions:
                           - sensor: avhrr
                             except:
                               platform_name: NOAA-15
                 """,
        doc="except: a nested set that must not match",
    ),
    ToolScenario(
        "d_cond_numeric",
        "dispatcher",
        drop=("a.dat", "b.dat", "c.dat"),
        expect=2,
        feed=(
            _file("a.dat", coverage=60, daylight=10),
            _file("b.dat", coverage=40, daylight=10),
            _file("c.dat", coverage="70.5", daylight=29.9),
        ),
        config="""
                     host: ""
                     directory: ${out}
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                         conditions:
                           - coverage: '>50'
                             daylight: '<30'
                 """,
        doc="numeric comparisons, numbers or numeric strings in the message",
    ),
    ToolScenario(
        "d_cond_missing_key",
        "dispatcher",
        drop=("a.dat", "b.dat"),
        expect=1,
        feed=(_file("a.dat", sensor="avhrr"), _file("b.dat", sensor="avhrr", area="euro")),
        config="""
                     host: ""
                     directory: ${out}
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                         conditions:
                           - area: euro
                 """,
        doc="a condition key missing from the message: not dispatched",
    ),
    ToolScenario(
        "d_aliases",
        "dispatcher",
        drop=("a.dat", "b.dat"),
        expect=2,
        feed=(_file("a.dat", platform_name="NOAA-19"), _file("b.dat", platform_name="Metop-B")),
        config="""
                     host: ""
                     directory: ${out}
                     filepattern: "{platform_name}-{uid}"
                     publish_topic: ${ptopic}
                     aliases:
                       platform_name:
                         NOAA-19: noaa19
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        doc="aliases rename values for the file name only",
    ),
    ToolScenario(
        "d_alias_name",
        "dispatcher",
        drop=("a.dat", "b.dat"),
        expect=2,
        feed=(_file("a.dat", platform_name="NOAA-19"), _file("b.dat", platform_name="NOAA-19")),
        config="""
                     host: ""
                     directory: ${out}
                     filepattern: "{short}_{uid}"
                     publish_topic: ${ptopic}
                     aliases:
                       platform_name:
                         - _alias_name: short
                           NOAA-19: n19
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        ours_only="0.19 pops _alias_name from its config on the first message; the second one "
        "raises KeyError 'short' and ends the dispatcher (reference §7.6)",
        expected={
            "files": {"local/n19_a.dat": sha("a.dat"), "local/n19_b.dat": sha("b.dat")},
            "uris_resolve": [True, True],
        },
        doc="an alias written to a new field (_alias_name), for every message",
    ),
    ToolScenario(
        "d_dataset",
        "dispatcher",
        drop=("ds1.dat", "ds2.dat"),
        expect=2,
        feed=(
            Feed(
                "dataset",
                {
                    "sensor": "avhrr",
                    "dataset": [
                        {"uri": "${src}/ds1.dat", "uid": "ds1.dat"},
                        {"uri": "${src}/ds2.dat", "uid": "ds2.dat"},
                    ],
                },
            ),
        ),
        config="""
                     host: ""
                     directory: ${out}/{sensor}
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        doc="a dataset message: each file dispatched and published as a file message",
    ),
    ToolScenario(
        "d_ftp",
        "dispatcher",
        drop=("a.dat",),
        expect=1,
        feed=(_file("a.dat", **AVHRR),),
        config="""
                     host: ${ftp_host}
                     directory: ${ftp_dir}/{sensor}
                     publish_topic: ${ptopic}
                     connection_parameters:
                       connection_uptime: 1
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        doc="FTP target (credentials in host), directory created",
    ),
    ToolScenario(
        "d_sftp",
        "dispatcher",
        drop=("a.dat",),
        expect=1,
        mkdirs=("${ssh_dir}/in",),
        feed=(_file("a.dat", **AVHRR),),
        config="""
                     host: ${sftp_host}
                     directory: ${ssh_dir}/in
                     publish_topic: ${ptopic}
                     connection_parameters:
                       ssh_private_key_file: ${ssh_key}
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        doc="SFTP target, existing directory",
    ),
    ToolScenario(
        "d_sftp_missing_dir",
        "dispatcher",
        drop=("a.dat",),
        expect=1,
        expect_019=0,
        feed=(_file("a.dat", **AVHRR),),
        config="""
                     host: ${sftp_host}
                     directory: ${ssh_dir}/new/deeper
                     publish_topic: ${ptopic}
                     connection_parameters:
                       ssh_private_key_file: ${ssh_key}
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        differences=(
            Difference(
                "files",
                "0.19's SFTP mover does not create directories: the dispatch fails "
                "(FileNotFoundError logged); ours creates them",
                ours={"ssh/new/deeper/a.dat": sha("a.dat")},
            ),
            Difference("messages", "0.19 publishes nothing (its copy failed)", ours=ANY),
            Difference("uris_resolve", "ours' message names the delivered file", ours=[True]),
        ),
        doc="SFTP target whose directory does not exist",
    ),
    ToolScenario(
        "d_ftp_tmp",
        "dispatcher",
        drop=("a.dat",),
        expect=1,
        feed=(_file("a.dat", **AVHRR),),
        config="""
                     host: ${ftp_host}
                     directory: ${ftp_dir}
                     publish_topic: ${ptopic}
                     connection_parameters:
                       use_tmp_on_transfer: true
                       connection_uptime: 1
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        doc="use_tmp_on_transfer: only the final name remains on the FTP server",
    ),
    ToolScenario(
        "d_host_file_localhost",
        "dispatcher",
        drop=("a.dat",),
        expect=1,
        feed=(_file("a.dat", **AVHRR),),
        config="""
                     host: file://localhost
                     directory: ${out}/{sensor}
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        doc="host file://localhost: a local copy",
    ),
    ToolScenario(
        "d_cond_numeric_ops",
        "dispatcher",
        drop=("a.dat", "b.dat", "c.dat"),
        expect=1,
        feed=(
            _file("a.dat", orbit=100, quality=1),
            _file("b.dat", orbit=99, quality=1),
            _file("c.dat", orbit=200, quality=0),
        ),
        config="""
                     host: ""
                     directory: ${out}
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                         conditions:
                           - orbit: '>=100'
                             quality: '!=0'
                 """,
        doc="'>=' and '!=' comparisons",
    ),
    ToolScenario(
        "d_cond_typed_equality",
        "dispatcher",
        drop=("a.dat", "b.dat"),
        expect=1,
        feed=(_file("a.dat", orbit=123), _file("b.dat", orbit="123")),
        config="""
                     host: ""
                     directory: ${out}
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                         conditions:
                           - orbit: 123
                 """,
        doc="a YAML number equals a message number, not a numeric string",
    ),
    ToolScenario(
        "d_scp",
        "dispatcher",
        drop=("a.dat",),
        expect=1,
        mkdirs=("${ssh_dir}/scp",),
        feed=(_file("a.dat", **AVHRR),),
        config="""
                     host: ${scp_host}
                     directory: ${ssh_dir}/scp
                     publish_topic: ${ptopic}
                     connection_parameters:
                       ssh_key_filename: ${ssh_key}
                       connection_uptime: 1
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        doc="SCP target",
    ),
    ToolScenario(
        "d_s3",
        "dispatcher",
        drop=("a.dat",),
        expect=1,
        feed=(_file("a.dat", **AVHRR),),
        config="""
                     host: s3://${bucket}
                     directory: /prefix/{sensor}
                     publish_topic: ${ptopic}
                     connection_parameters:
                       key: ${s3_key}
                       secret: ${s3_secret}
                       client_kwargs:
                         endpoint_url: ${s3_endpoint}
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        doc="S3 target with credentials and endpoint in connection_parameters",
    ),
    ToolScenario(
        "d_override",
        "dispatcher",
        drop=("a.dat", "b.dat"),
        expect=2,
        feed=(_file("a.dat", "${topic}/special", **AVHRR), _file("b.dat", "${topic}/plain", **AVHRR)),
        config="""
                     host: ""
                     directory: ${out}/default
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}/special]
                         directory: ${out}/special
                         filepattern: "special-{uid}"
                       - topics: [${topic}/plain]
                 """,
        doc="a dispatch_configs item overrides directory and filepattern",
    ),
    ToolScenario(
        "d_no_publish_topic",
        "dispatcher",
        drop=("a.dat",),
        expect=0,
        feed=(_file("a.dat", **AVHRR),),
        config="""
                     host: ""
                     directory: ${out}
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        aspects=("files", "messages"),
        doc="-p without publish_topic for the target: dispatched, nothing published (error logged)",
    ),
    ToolScenario(
        "d_file_creation_time",
        "dispatcher",
        drop=("a.dat",),
        expect=1,
        feed=(_file("a.dat", **AVHRR),),
        config="""
                     host: ""
                     directory: ${out}
                     filepattern: "{file_creation_time:%Y}-{uid}"
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        doc="file_creation_time (the source's ctime) in the file pattern",
    ),
    ToolScenario(
        "d_file_uri",
        "dispatcher",
        drop=("a.dat",),
        expect=1,
        feed=(Feed("file", {"uri": "file://${src}/a.dat", "uid": "a.dat", **AVHRR}),),
        config="""
                     host: ""
                     directory: ${out}
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        ours_only="0.19 calls os.path.getctime on the 'file://…' uri: FileNotFoundError ends the "
        "dispatcher (reference §7.6)",
        expected={"files": {"local/a.dat": sha("a.dat")}, "uris_resolve": [True]},
        doc="a file:// uri (as a client of ours or of 0.19 may publish)",
    ),
    ToolScenario(
        "d_compose_missing_field",
        "dispatcher",
        drop=("a.dat", "b.dat"),
        expect=1,
        feed=(_file("a.dat"), _file("b.dat", product="ir")),
        config="""
                     host: ""
                     directory: ${out}
                     filepattern: "{product}.dat"
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        ours_only="0.19's compose raises KeyError 'product', which ends the dispatcher (reference §7.6)",
        expected={"files": {"local/ir.dat": sha("b.dat")}, "uris_resolve": [True]},
        doc="a file pattern field missing from one message: that one is skipped, the next dispatched",
    ),
    ToolScenario(
        "d_two_matching_configs",
        "dispatcher",
        drop=("a.dat",),
        expect=1,
        feed=(_file("a.dat", **AVHRR),),
        config="""
                     host: ""
                     directory: ${out}/first
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                       - topics: [${topic}]
                         directory: ${out}/second
                 """,
        ours_only="0.19 raises NotImplementedError('Only one destination allowed per client'), "
        "which ends the dispatcher (reference §7.6)",
        expected={"files": {"local/first/a.dat": sha("a.dat")}, "uris_resolve": [True]},
        doc="two dispatch_configs of one target match: the first wins (documented)",
    ),
    ToolScenario(
        "d_missing_source",
        "dispatcher",
        drop=("b.dat",),
        expect=1,
        feed=(_file("gone.dat", **AVHRR), _file("b.dat", **AVHRR)),
        config="""
                     host: ""
                     directory: ${out}
                     publish_topic: ${ptopic}
                     dispatch_configs:
                       - topics: [${topic}]
                 """,
        ours_only="0.19 calls os.path.getctime on the missing file before checking it exists: "
        "FileNotFoundError ends the dispatcher (reference §7.6)",
        expected={"files": {"local/b.dat": sha("b.dat")}, "uris_resolve": [True]},
        doc="a message naming a file that does not exist: skipped, the next one dispatched",
    ),
]

# --------------------------------------------------------------------------------------------------
# s3downloader
# --------------------------------------------------------------------------------------------------

S3_UID = Difference(
    "messages",
    "ours adds uid (the local base name) to the republished message; 0.19 has "
    "none (reference §7.10); checked by check_s3_messages_are_019_plus_uid",
    ours=ANY,
)


def _s3(
    name: str, key: str | None = None, atype: str = "file", subject: str = "${topic}", **metadata
) -> Feed:
    return Feed(atype, {"uri": f"s3://${{s3_src}}/{key or name}", "uid": name, **metadata}, subject)


S3DOWNLOADER = [
    ToolScenario(
        "s3_top_level",
        "s3downloader",
        objects=(("top1.dat", "top1.dat"),),
        expect=1,
        feed=(_s3("top1.dat", sensor="olci"),),
        differences=(S3_UID,),
        checks=("check_s3_messages_are_019_plus_uid",),
        doc="an object at the bucket root, announced with its s3:// uri",
    ),
    ToolScenario(
        "s3_dropped_keys",
        "s3downloader",
        objects=(("top2.dat", "top2.dat"),),
        expect=1,
        feed=(
            _s3(
                "top2.dat",
                platform_name="S3A",
                filename="top2.dat",
                compress="no",
                tst="x",
                file_list=["top2.dat"],
                path="top2.dat",
                filesystem={"cls": "s3fs.S3FileSystem"},
            ),
        ),
        differences=(S3_UID,),
        checks=("check_s3_messages_are_019_plus_uid",),
        doc="the keys 0.19 drops from the republished message (filename, compress, tst, file_list, path)",
    ),
    ToolScenario(
        "s3_ignored_types",
        "s3downloader",
        objects=(("top3.dat", "top3.dat"),),
        expect=0,
        feed=(_s3("top3.dat", atype="ack"), _s3("top3.dat", subject="/compat/s3dl/other")),
        doc="an ack message and a message on another topic: nothing downloaded",
    ),
    ToolScenario(
        "s3_non_s3_uri",
        "s3downloader",
        objects=(("top4.dat", "top4.dat"),),
        expect=1,
        feed=(Feed("file", {"uri": "/data/incoming/top4.dat", "uid": "top4.dat"}),),
        differences=(S3_UID,),
        doc="a uri that is a plain path: 0.19 downloads <bucket>/<basename>",
    ),
    ToolScenario(
        "s3_subpath_key",
        "s3downloader",
        objects=(("deep/sub/inner.dat", "inner-deep"), ("inner.dat", "inner-decoy")),
        expect=1,
        feed=(_s3("inner.dat", key="deep/sub/inner.dat"),),
        ours_only="0.19 downloads <bucket>/<basename(uri)>, ignoring the path inside the bucket "
        "(reference §7.10): here it would fetch the decoy object 'inner.dat'",
        expected={"files": {"local/inner.dat": sha("inner-deep", 1500)}, "uris_resolve": [True]},
        doc="an object in a sub-path of the bucket: ours downloads that object",
    ),
    ToolScenario(
        "s3_dataset",
        "s3downloader",
        objects=(("ds/d1.dat", "d1.dat"), ("ds/d2.dat", "d2.dat")),
        expect=2,
        feed=(
            Feed(
                "dataset",
                {
                    "sensor": "olci",
                    "dataset": [
                        {"uri": "s3://${s3_src}/ds/d1.dat", "uid": "d1.dat"},
                        {"uri": "s3://${s3_src}/ds/d2.dat", "uid": "d2.dat"},
                    ],
                },
            ),
        ),
        ours_only="0.19 reads a top-level uri of a dataset message: KeyError 'uri' ends its download "
        "loop (reference §7.10)",
        expected={
            "files": {"local/d1.dat": sha("d1.dat", 1500), "local/d2.dat": sha("d2.dat", 1500)},
            "uris_resolve": [True, True],
        },
        doc="a dataset message: every file downloaded and announced",
    ),
    ToolScenario(
        "s3_missing_object",
        "s3downloader",
        expect=0,
        feed=(_s3("nothere.dat"),),
        names=("nothere.dat",),
        expected={"files": {}},
        ours_only="0.19's s3fs get_file raises FileNotFoundError in its download loop, which ends it "
        "(no further download)",
        doc="an announced object that does not exist: nothing downloaded or announced",
    ),
    ToolScenario(
        "s3_logging_mode",
        "s3downloader",
        objects=(("top5.dat", "top5.dat"),),
        expect=1,
        feed=(_s3("top5.dat"),),
        aspects=("debug",),
        doc="logging: logging_mode: DEBUG (the template's value) turns on debug logging",
    ),
]

# --------------------------------------------------------------------------------------------------
# start-up (exit codes)
# --------------------------------------------------------------------------------------------------

_MINIMAL_SECTION = """
    [compat]
    origin = ${src}/{name}.dat
    destinations = ${out}/
    topic = /compat/x
"""

EXITS = [
    ToolScenario(
        "x_move_it_missing_config",
        "exit",
        script="move_it.py",
        argv=("/nonexistent/compat.ini",),
        aspects=("status", "exit"),
        differences=(EXIT_CODE,),
        doc="config file does not exist",
    ),
    ToolScenario(
        "x_move_it_bad_ini",
        "exit",
        script="move_it.py",
        argv=("{config}",),
        config="[compat\norigin = ${src}/{name}.dat\n",
        aspects=("status", "exit"),
        differences=(EXIT_CODE,),
        doc="INI syntax error",
    ),
    ToolScenario(
        "x_move_it_empty_publish_port",
        "exit",
        script="move_it.py",
        argv=("{config}",),
        drop=("a.dat",),
        config=_MINIMAL_SECTION + "    publish_port =\n",
        aspects=("status", "files"),
        doc="'publish_port =' as in 0.19's own move_it example: runs and moves files",
    ),
    ToolScenario(
        "x_move_it_unknown_scheme",
        "exit",
        script="move_it.py",
        argv=("{config}",),
        drop=("a.dat",),
        config="""
                     [compat]
                     origin = ${src}/{name}.dat
                     destinations = gopher://example.invalid/x ${out}/
                     topic = /compat/x
                 """,
        aspects=("status", "files", "exit"),
        differences=(
            Difference(
                "status",
                "0.19 starts and logs 'Unsupported protocol' for every file, copying "
                "to the other destinations only; ours refuses the config at load",
                ours=FAILED,
            ),
            Difference("files", "ours did not start (see status)", ours={}),
            Difference("exit", "ours: config error, exit 2", ours=2),
        ),
        checks=("check_log_names_destinations",),
        doc="a destination with a scheme no mover supports",
    ),
    ToolScenario(
        "x_move_it_backlog",
        "exit",
        script="move_it.py",
        argv=("{config}",),
        present=("old.dat",),
        drop=("new.dat",),
        config=_MINIMAL_SECTION,
        aspects=("status", "files"),
        doc="without --disable-backlog a file already present is moved at start",
    ),
    ToolScenario(
        "x_move_it_polling",
        "exit",
        script="move_it.py",
        argv=("-w", "--disable-backlog", "{config}"),
        drop=("a.dat",),
        config=_MINIMAL_SECTION + "    watchdog_timeout = 0.5\n",
        aspects=("status", "files"),
        doc="-w with watchdog_timeout (0.19's move_it ignores -w; either way the file is moved)",
    ),
    ToolScenario(
        "x_dispatcher_missing_config",
        "exit",
        script="dispatcher.py",
        argv=("/nonexistent/compat.yaml",),
        aspects=("status", "exit"),
        differences=(EXIT_CODE,),
        doc="config file does not exist",
    ),
    ToolScenario(
        "x_dispatcher_bad_yaml",
        "exit",
        script="dispatcher.py",
        argv=("{config}",),
        config="target: [unclosed\n",
        aspects=("status", "exit"),
        differences=(EXIT_CODE,),
        doc="YAML syntax error",
    ),
    ToolScenario(
        "x_dispatcher_no_dispatch_configs",
        "exit",
        script="dispatcher.py",
        argv=("{config}",),
        config='target:\n  host: ""\n  directory: ${out}\n',
        aspects=("status", "exit"),
        differences=(EXIT_CODE,),
        doc="a target without dispatch_configs",
    ),
    ToolScenario(
        "x_s3_missing_config",
        "exit",
        script="s3downloader.py",
        argv=("-c", "/nonexistent/compat.yaml"),
        aspects=("status", "exit"),
        differences=(EXIT_CODE,),
        doc="config file does not exist",
    ),
    ToolScenario(
        "x_s3_no_logging",
        "exit",
        script="s3downloader.py",
        argv=("-c", "{config}", "-n", "localhost"),
        config="""
                     subscribe-topic: /compat/none
                     publish-topic: /compat/none/out
                     bucket: compat-none
                     download_destination: ${out}
                     subscriber_addresses: tcp://127.0.0.1:9
                 """,
        aspects=("status",),
        differences=(
            Difference(
                "status",
                "0.19 requires the 'logging' mapping ('Logging setup failed', "
                "exit 1, reference §7.10); ours makes it optional",
                ours=RUNNING,
            ),
        ),
        doc="an s3downloader config without the logging mapping",
    ),
]

ALL = MOVE_IT + DISPATCHER + S3DOWNLOADER + EXITS
