"""``python -m comfy_memhooks``: the probes and the engine outside ComfyUI, for a shell, a container or a script."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence

from .engine.core import Engine
from .engine.history import Trigger, TriggerKind
from .engine.modes import Mode
from .engine.report import detailed_report, record_lines, status_line
from .engine.request import CleanupRequest, Urgency
from .errors import InvalidSetting
from .panel.payloads import record_json, snapshot_json


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1 (leave --count out to watch until Ctrl+C)")
    return value


def _mode(text: str) -> Mode:
    try:
        return Mode.parse(text)
    except InvalidSetting as error:
        raise argparse.ArgumentTypeError(error.problem) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m comfy_memhooks",
        description="RAM (container-aware) and VRAM per GPU, and the cleanup engine, outside ComfyUI.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = commands.add_parser("status", help="print the status line")
    output = status.add_mutually_exclusive_group()
    output.add_argument("--detailed", action="store_true", help="the full report, GPU processes included")
    output.add_argument("--json", action="store_true", help="a snapshot as JSON")

    optimize = commands.add_parser("optimize", help="run the engine on this process and print what it freed")
    optimize.add_argument(
        "--mode", type=_mode, default=Mode.BALANCED, help="Monitor Only, Conservative, Balanced or Aggressive"
    )
    optimize.add_argument("--json", action="store_true", help="the history record as JSON")

    watch = commands.add_parser("watch", help="print a live status line until interrupted")
    watch.add_argument("--interval", type=_positive_seconds, default=1.0, help="seconds between lines")
    watch.add_argument("--count", type=_count, default=None, help="stop after this many lines (at least 1)")

    serve = commands.add_parser(
        "serve",
        help="serve the Memory panel without ComfyUI",
        description="Serves the Memory panel (the same page and routes as in ComfyUI's sidebar, with live updates "
        "over a websocket of its own) for this machine, without ComfyUI. It has no login: keep it on loopback.",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, loopback only; any other address lets anyone who can reach "
        "the port read memory and GPU processes and change the settings)",
    )
    serve.add_argument(
        "--port", type=int, default=8189, help="TCP port to listen on, 0 for any free one (default: 8189)"
    )
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the page may be opened by, beside loopback names and IP addresses (repeatable); "
        "other names in the Host header are refused, which stops DNS rebinding",
    )
    serve.add_argument(
        "--token",
        default=os.environ.get("COMFY_MEMHOOKS_TOKEN"),
        help="beyond loopback, the secret that changes need (X-Memhooks-Token header, or #token=... in the page's "
        "address); default: $COMFY_MEMHOOKS_TOKEN",
    )
    serve.add_argument(
        "--interval",
        type=_positive_seconds,
        default=1.0,
        help="seconds between live samples pushed to the page (default: 1)",
    )
    return parser


def _print(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _fail(message: str) -> int:
    """One line on stderr and exit status 2, as argparse does for a bad argument: no traceback for the user's input."""
    sys.stderr.write(f"python -m comfy_memhooks: error: {message}\n")
    sys.stderr.flush()
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    if arguments.command == "serve" and not 0 <= arguments.port <= 65535:
        return _fail(f"--port {arguments.port} is not a TCP port; use 0 to 65535")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    engine = Engine()
    if arguments.command == "status":
        snapshot = engine.snapshot(include_processes=arguments.detailed or arguments.json)
        if arguments.json:
            _print(json.dumps(snapshot_json(snapshot), indent=2))
        elif arguments.detailed:
            _print(detailed_report(snapshot))
        else:
            _print(status_line(snapshot))
    elif arguments.command == "optimize":
        trigger = Trigger(kind=TriggerKind.MANUAL, reason="command line")
        outcome = engine.run(CleanupRequest(trigger=trigger, mode=arguments.mode, urgency=Urgency.ROUTINE))
        if arguments.json:
            _print(json.dumps(None if outcome.record is None else record_json(outcome.record), indent=2))
        elif outcome.record is None:
            _print(f"{status_line(outcome.snapshot)}\nNo optimization: {outcome.reason}")
        else:
            _print("\n".join([status_line(outcome.snapshot), *record_lines(outcome.record)]))
    elif arguments.command == "watch":
        printed = 0
        try:
            while arguments.count is None or printed < arguments.count:
                if printed:
                    time.sleep(arguments.interval)
                snapshot = engine.snapshot()
                _print(f"{time.strftime('%H:%M:%S', time.localtime(snapshot.taken_at))}  {status_line(snapshot)}")
                printed += 1
        except KeyboardInterrupt:
            return 0
    elif arguments.command == "serve":
        from .panel.standalone import serve

        try:
            serve(
                engine,
                host=arguments.host,
                port=arguments.port,
                interval=arguments.interval,
                allowed_hosts=tuple(arguments.allow_host),
                token=arguments.token,
            )
        except OSError as error:  # a port in use, an address not of this machine, an unknown host name
            return _fail(f"cannot listen on {arguments.host} port {arguments.port}: {error.strerror or error}")
    return 0
