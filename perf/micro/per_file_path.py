"""Per-file CPU of the announce -> request -> publish path: ours against trollsift + posttroll calls.

The path, per announced file, without I/O (issue 10):
  server: match the name against the origin pattern, build the announcement, encode it;
  client: decode it, compose the destination, build + encode the push request;
  server: decode the request, build + encode the reply;
  client: decode the reply, build + encode the final `file` message.
"ours" uses trollmoves.matching (PatternMatcher, Composer) and trollmoves.messaging
(make_message/wire/decode); "baseline" the same steps with trollsift.parse,
trollsift.compose, posttroll Message(...).encode() and Message.decode(). Both run in
the same process, interleaved, best of several rounds; CPU time (process_time).

    python perf/micro/per_file_path.py [--files N] [--rounds R] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

ORIGIN = "/data/in/hrpt_{platform_name}_{start_time:%Y%m%d_%H%M}_{orbit_number:05d}.l1b"
DESTINATION = "file:///data/out/{platform_name}/{start_time:%Y/%m/%d}/"
INFO = {"sensor": "avhrr", "variant": "DR"}


def names(count: int) -> list[str]:
    return [f"/data/in/hrpt_noaa{15 + i % 5}_2024{1 + i % 12:02d}{1 + i % 28:02d}_{i % 24:02d}{i % 60:02d}_"
            f"{i % 100000:05d}.l1b" for i in range(count)]


def ours(paths: list[str]) -> None:
    from trollmoves import messaging
    from trollmoves.matching import Composer, PatternMatcher

    matcher, composer = PatternMatcher(ORIGIN), Composer(DESTINATION)
    for path in paths:
        data = dict(INFO)
        data.update(matcher.parse(path))
        data["uri"] = path
        data["uid"] = path.rsplit("/", 1)[1]
        data["request_address"] = "10.0.0.1:9094"
        announced = messaging.decode(messaging.wire(messaging.make_message("/oper/hrpt", "file", data)))
        push = dict(announced.data)
        push["destination"] = composer.compose(push)
        request = messaging.decode(messaging.wire(messaging.make_message(announced.subject, "push", push)))
        reply = messaging.decode(messaging.wire(messaging.make_message(request.subject, "file", request.data)))
        final = dict(reply.data)
        final["uri"] = final.pop("destination") + final["uid"]
        final["origin"] = final.pop("request_address")
        messaging.wire(messaging.make_message(reply.subject, "file", final))


def baseline(paths: list[str]) -> None:
    import trollsift
    from posttroll.message import Message

    for path in paths:
        data = dict(INFO)
        data.update(trollsift.parse(ORIGIN, path))
        data["uri"] = path
        data["uid"] = path.rsplit("/", 1)[1]
        data["request_address"] = "10.0.0.1:9094"
        announced = Message.decode(Message("/oper/hrpt", "file", data).encode())
        push = dict(announced.data)
        push["destination"] = trollsift.compose(DESTINATION, push)
        request = Message.decode(Message(announced.subject, "push", push).encode())
        reply = Message.decode(Message(request.subject, "file", request.data).encode())
        final = dict(reply.data)
        final["uri"] = final.pop("destination") + str(final["uid"])
        final["origin"] = final.pop("request_address")
        Message(reply.subject, "file", final).encode()


def measure(files: int, rounds: int) -> dict:
    paths = names(files)
    ours(paths[:100])
    baseline(paths[:100])
    best = {"ours": float("inf"), "baseline": float("inf")}
    for _ in range(rounds):
        for label, function in (("ours", ours), ("baseline", baseline)):
            start = time.process_time()
            function(paths)
            best[label] = min(best[label], (time.process_time() - start) / files * 1e6)
    from trollmoves._accel import IMPLEMENTATION

    return {"id": f"path.cpu_per_file_inprocess.{IMPLEMENTATION}", "unit": "us/file", "ours": best["ours"],
            "baseline": best["baseline"], "ratio": best["baseline"] / best["ours"], "files": files,
            "rounds": rounds, "speedups": IMPLEMENTATION}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    result = measure(args.files, args.rounds)
    print(f"per-file CPU, announce -> request -> publish path [{result['speedups']}]: ours {result['ours']:.1f} us, "
          f"trollsift+posttroll {result['baseline']:.1f} us, ratio {result['ratio']:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(result, stream, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
