"""Command lines: ``trollmoves <command>`` and the original script names.

The original scripts keep their names and options (``move_it_server.py -p 9010
--disable-backlog -w config.ini`` and so on, reference §1); ``trollmoves`` groups
the same programs as subcommands and adds ``check-config``, ``status`` and ``demo``.
Everything here is the program layer: argument parsing, logging set-up, then a
service run under ``trollmoves.program.run_service``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Sequence

from trollmoves import __version__
from trollmoves.errors import ConfigError
from trollmoves.memory import limit_malloc_arenas
from trollmoves.program import EXIT_CONFIG, load_config, log_start, run_service, setup_logging

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Option groups shared by several programs
# --------------------------------------------------------------------------------------------------

def _add_logging_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("logging")
    group.add_argument("-c", "--log-config", metavar="YAML",
                       help="logging configuration (a logging.config.dictConfig mapping in YAML)")
    group.add_argument("-l", "--log", metavar="FILE",
                       help="log to FILE at DEBUG, rotated at midnight (7 kept); prefer --log-config")
    group.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")


def _add_metrics_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics")
    group.add_argument("--metrics-port", type=int, metavar="PORT",
                       help="serve /metrics and /healthz on this port (config: [trollmoves] metrics_port)")
    group.add_argument("--metrics-address", metavar="ADDR",
                       help="address for /metrics (default 127.0.0.1; config: [trollmoves] metrics_address)")


def _server_parser(prog: str, default_port: int | None, description: str,
                   watches: bool = True) -> argparse.ArgumentParser:
    """Options of the server, move_it and mirror programs.

    ``watches`` False (the mirror): no directory-watching options. The mirror watches no
    directory, and 0.19's move_it_mirror.py had none of them: refused by argparse, as there.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("config_file", help="INI (or TOML) file, one section per chain")
    port_help = ("port of the publisher that announces files" +
                 (f" (default {default_port})" if default_port else " (default: no publisher)"))
    parser.add_argument("-p", "--port", type=int, default=default_port, help=port_help)
    parser.add_argument("--publish-address", default="*", metavar="ADDR",
                        help="address the publisher binds to (default: all interfaces, as the original)")
    if watches:
        _add_watching_options(parser)
    _add_logging_options(parser)
    _add_metrics_options(parser)
    return parser


def _add_watching_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--disable-backlog", action="store_true",
                        help="do not announce the files already present at start or reload")
    parser.add_argument("-w", "--watchdog", action="store_true",
                        help="poll the directories (every watchdog_timeout s) instead of inotify: "
                             "for network mounts")
    parser.add_argument("--chain-check-interval", type=float, default=30.0, metavar="SECONDS",
                        help="how often chains are checked and dead watchers restarted (default 30)")
    parser.add_argument("--max-notifier-restarts", type=int, default=10, metavar="N",
                        help="give up after N consecutive watcher restarts of a chain; 0 = never (default 10)")


def _client_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Subscribe to servers' announcements, have the files pushed to the destination, "
                               "and publish a message for each file received.")
    parser.add_argument("config_file", help="INI (or TOML) file, one section per chain")
    _add_logging_options(parser)
    _add_metrics_options(parser)
    return parser


def _dispatcher_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Push the files of matching posttroll messages to the configured targets.")
    parser.add_argument("config_file", help="dispatcher YAML (or TOML)")
    parser.add_argument("-p", "--publish-port", type=int, nargs="?", const=0, default=None, metavar="PORT",
                        help="publish a message per dispatched file on PORT (alone: a random port)")
    parser.add_argument("-n", "--publish-nameserver", nargs="*", default=None, metavar="NS",
                        help="nameservers to register the publisher with")
    _add_logging_options(parser)
    _add_metrics_options(parser)
    return parser


def _wis2_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Bridge to WIS2: publish a WIS2 Notification Message on an MQTT broker for each "
                               "announced file (publish chains), and download, verify, store and announce on "
                               "posttroll the files WIS2 notifications announce (subscribe chains). "
                               "See docs/wis2.md.")
    parser.add_argument("config_file", help="INI (or TOML) file, one section per chain (direction = publish or "
                                            "subscribe)")
    parser.add_argument("-p", "--publish-port", type=int, default=None, metavar="PORT",
                        help="port of the posttroll publisher that announces downloaded files (default: a random "
                             "port, registered with the nameservers)")
    parser.add_argument("-n", "--publish-nameserver", nargs="*", default=None, metavar="NS",
                        help="nameservers to register the publisher with (none given: no registration)")
    _add_logging_options(parser)
    _add_metrics_options(parser)
    return parser


def _s3downloader_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Download S3 objects announced on posttroll and announce the local files.")
    parser.add_argument("-c", "--config-file", required=True, help="s3downloader YAML (or TOML)")
    parser.add_argument("-l", "--log", metavar="FILE", help="log file")
    parser.add_argument("--log-config", metavar="YAML", help="logging configuration (dictConfig YAML)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("-r", "--subscribe-nameserver", default="localhost", metavar="NS",
                        help="nameserver to look services up on (default localhost)")
    parser.add_argument("-n", "--nameservers", nargs="*", default=None, metavar="NS",
                        help="nameservers to register the publisher with")
    _add_metrics_options(parser)
    return parser


# --------------------------------------------------------------------------------------------------
# Programs
# --------------------------------------------------------------------------------------------------

def _warn_legacy(args: argparse.Namespace) -> None:
    if getattr(args, "log", None) and not getattr(args, "log_config", None):
        warnings.warn("-l/--log is pending deprecation, please use --log-config instead.",
                      PendingDeprecationWarning, stacklevel=3)


def _start_logging(args: argparse.Namespace) -> int | None:
    try:
        setup_logging(getattr(args, "log_config", None), getattr(args, "log", None),
                      getattr(args, "verbose", False))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _warn_legacy(args)
    return None


def _run(kind: str, name: str, args: argparse.Namespace, build: Callable) -> int:
    limit_malloc_arenas()  # before any thread starts
    failed = _start_logging(args)
    if failed is not None:
        return failed
    try:
        cfg = load_config(args.config_file, kind)
    except ConfigError as exc:
        log_start(name)
        logger.critical("Cannot start %s: %s", name, exc)
        return EXIT_CONFIG
    log_start(name, cfg.daemon.log_implementation)
    service = build(cfg, args)
    try:
        metrics = _start_metrics(cfg, args, service, name)
    except OSError as exc:
        logger.critical("Cannot start %s: %s", name, exc)
        return EXIT_CONFIG
    try:
        return run_service(service, args.config_file, kind, cfg.daemon.drain_timeout,
                           check_health=getattr(service, "fatal_error", None))
    finally:
        if metrics is not None:
            metrics.stop()


def _start_metrics(cfg, args: argparse.Namespace, service, name: str):
    port = getattr(args, "metrics_port", None) or cfg.daemon.metrics_port
    if not port:
        return None
    address = getattr(args, "metrics_address", None) or cfg.daemon.metrics_address
    from trollmoves.metrics import MetricsHTTPServer

    server = MetricsHTTPServer(address, port, getattr(service, "metrics", None), getattr(service, "health", None))
    server.start()  # OSError (port taken) is reported by _run as a start-up error
    logger.info("Serving /metrics and /healthz on http://%s:%s", address, server.port)
    return server


def _build_server(cfg, args):
    from trollmoves.server import Server, ServerOptions

    options = ServerOptions(publish_port=args.port if args.port is not None else 9010,
                            publish_address=args.publish_address,
                            backlog=not args.disable_backlog, polling=args.watchdog,
                            chain_check_interval=args.chain_check_interval,
                            max_notifier_restarts=args.max_notifier_restarts)
    return Server(cfg, options)


def _build_client(cfg, args):
    from trollmoves.client import Client

    return Client(cfg)


def _build_mirror(cfg, args):
    from trollmoves.mirror import Mirror, ServerOptions

    return Mirror(cfg, ServerOptions(publish_port=args.port if args.port is not None else 9010,
                                     publish_address=args.publish_address, backlog=False))


def _build_move_it(cfg, args):
    from trollmoves.move_it import MoveIt, MoveItOptions

    return MoveIt(cfg, MoveItOptions(publish_port=args.port, publish_address=args.publish_address,
                                     backlog=not args.disable_backlog, polling=args.watchdog,
                                     chain_check_interval=args.chain_check_interval,
                                     max_notifier_restarts=args.max_notifier_restarts))


def _build_dispatcher(cfg, args):
    from trollmoves.dispatcher import Dispatcher, DispatcherOptions

    return Dispatcher(cfg, DispatcherOptions(publish_port=args.publish_port,
                                             publish_nameservers=args.publish_nameserver))


def _build_s3downloader(cfg, args):
    from trollmoves.config import thaw
    from trollmoves.program import apply_s3downloader_logging
    from trollmoves.s3downloader import S3Downloader, S3DownloaderOptions

    if not args.log_config:  # the config's `logging` keys, as 0.19 read them
        apply_s3downloader_logging(thaw(cfg.chains[0].logging), args.log, args.verbose)
    return S3Downloader(cfg, S3DownloaderOptions(subscribe_nameserver=args.subscribe_nameserver,
                                                 publish_nameservers=args.nameservers))


def _build_wis2(cfg, args):
    from trollmoves.wis2_bridge import Wis2Bridge, Wis2Options

    nameservers = args.publish_nameserver if args.publish_nameserver is not None else False
    return Wis2Bridge(cfg, Wis2Options(publish_port=args.publish_port, publish_nameservers=nameservers))


PROGRAMS: dict[str, tuple[str, Callable]] = {
    "server": ("move_it_server", _build_server),
    "client": ("move_it_client", _build_client),
    "mirror": ("move_it_mirror", _build_mirror),
    "move_it": ("move_it", _build_move_it),
    "dispatcher": ("dispatcher", _build_dispatcher),
    "s3downloader": ("s3downloader", _build_s3downloader),
    "wis2": ("wis2", _build_wis2),
}


def _parser_for(kind: str, prog: str) -> argparse.ArgumentParser:
    if kind == "server":
        return _server_parser(prog, 9010, "Watch directories, announce new files on posttroll, and push them to "
                                          "the clients that request them.")
    if kind == "mirror":
        return _server_parser(prog, 9010, "Relay announcements and files between networks: a client toward the "
                                          "providers, a server toward its own clients.", watches=False)
    if kind == "move_it":
        return _server_parser(prog, None, "Watch directories and copy each new file to every destination.")
    if kind == "client":
        return _client_parser(prog)
    if kind == "dispatcher":
        return _dispatcher_parser(prog)
    if kind == "wis2":
        return _wis2_parser(prog)
    return _s3downloader_parser(prog)


def run_program(kind: str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    name, build = PROGRAMS[kind]
    args = _parser_for(kind, prog or f"{name}.py").parse_args(argv)
    return _run(kind, name, args, build)


def move_it_server(argv: Sequence[str] | None = None) -> int:
    """Console script ``move_it_server.py``."""
    return run_program("server", argv)


def move_it_client(argv: Sequence[str] | None = None) -> int:
    """Console script ``move_it_client.py``."""
    return run_program("client", argv)


def move_it_mirror(argv: Sequence[str] | None = None) -> int:
    """Console script ``move_it_mirror.py``."""
    return run_program("mirror", argv)


def move_it(argv: Sequence[str] | None = None) -> int:
    """Console script ``move_it.py``."""
    return run_program("move_it", argv)


def dispatcher(argv: Sequence[str] | None = None) -> int:
    """Console script ``dispatcher.py``."""
    return run_program("dispatcher", argv)


def s3downloader(argv: Sequence[str] | None = None) -> int:
    """Console script ``s3downloader.py``."""
    return run_program("s3downloader", argv)


# --------------------------------------------------------------------------------------------------
# check-config
# --------------------------------------------------------------------------------------------------

def check_config(argv: Sequence[str] | None = None) -> int:
    """``trollmoves check-config FILE...``: print every problem; exit 0 if all files are valid, else 1."""
    from trollmoves import config as tm_config

    parser = argparse.ArgumentParser(
        prog="trollmoves check-config",
        description="Validate trollmoves config files exactly as the daemons load them. Prints each error and "
                    "warning with the file, section and key at fault. Exit status: 0 valid (warnings allowed), "
                    "1 invalid. Usable as Ansible's `validate:`.")
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--kind", choices=tm_config.KINDS,
                        help="which daemon the file is for (default: guessed from the content)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        try:
            cfg = tm_config.load(path, args.kind)
        except ConfigError as exc:
            print(f"ERROR {exc}")
            status = 1
            continue
        for error in cfg.errors:
            print(f"ERROR {error}")
        if not args.quiet:
            for warning in cfg.warnings:
                print(f"WARNING {warning}")
        bad = bool(cfg.errors) or (args.strict and bool(cfg.warnings))
        if not bad and not cfg.chains:
            print(f"ERROR {path}: nothing to run (no valid section)")
            bad = True
        if bad:
            status = 1
        elif not args.quiet:
            what = "target" if cfg.kind == "dispatcher" else "section"
            count = len(cfg.chains)
            print(f"OK {path}: {cfg.kind} config, {count} {what}{'' if count == 1 else 's'} "
                  f"({', '.join(cfg.chain_names)})")
    return status


# --------------------------------------------------------------------------------------------------
# trollmoves <command>
# --------------------------------------------------------------------------------------------------

COMMANDS = {
    "server": "watch directories, announce files, push them on request (move_it_server.py)",
    "client": "request announced files and publish their arrival (move_it_client.py)",
    "mirror": "relay announcements and files between networks (move_it_mirror.py)",
    "move-it": "copy each new file to every destination (move_it.py)",
    "dispatcher": "push products to remote targets by message metadata (dispatcher.py)",
    "s3downloader": "download announced S3 objects (s3downloader.py)",
    "wis2": "publish our files to WIS2 over MQTT and feed WIS2 files into chains",
    "check-config": "validate config files; exit 1 on any error",
    "status": "one table of every chain of running daemons (from /healthz and /metrics); exit 1 if unhealthy",
    "demo": "run nameserver, server and client on loopback and show files arriving",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``trollmoves``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        lines = [f"usage: trollmoves <command> [options]   (trollmoves {__version__})", "", "commands:"]
        lines += [f"  {name:<14}{text}" for name, text in COMMANDS.items()]
        lines += ["", "Run `trollmoves <command> --help` for a command's options."]
        print("\n".join(lines))
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"trollmoves {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "check-config":
        return check_config(rest)
    if command == "status":
        from trollmoves.status import main as status_main

        return status_main(rest)
    if command == "demo":
        from trollmoves.demo import main as demo_main

        return demo_main(rest)
    kind = {"move-it": "move_it", "move_it": "move_it"}.get(command, command)
    if kind not in PROGRAMS:
        print(f"trollmoves: unknown command {command!r}; see `trollmoves --help`", file=sys.stderr)
        return 2
    return run_program(kind, rest, prog=f"trollmoves {command}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
