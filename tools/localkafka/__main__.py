"""``python -m tools.localkafka {fetch,start,stop,run}``: a local single-node Kafka.

fetch            resolve the Kafka jars from Maven Central into the cache (once)
start --dir DIR  start a broker in the background, data in DIR/data; writes
                 DIR/bootstrap (host:port) and DIR/pid; returns once it is ready
stop --dir DIR   stop the broker started with ``start --dir DIR``
run              run a broker in the foreground (temp data dir) until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from .broker import KAFKA_VERSION, KafkaStartError, LocalKafka, ensure_jars


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (not reaped yet) counts as gone
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid)  # no /proc: trust the pid file
    args = [part.decode(errors="replace") for part in cmdline]
    return "kafka.Kafka" in args and any(str(data_dir) in arg for arg in args)


def _cmd_fetch(_: argparse.Namespace) -> int:
    print(ensure_jars())
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    base = Path(args.dir).resolve()
    pid_file = base / "pid"
    if pid_file.is_file():
        pid = int(pid_file.read_text().strip() or "0")
        if pid > 0 and _alive(pid) and _is_our_broker(pid, base / "data"):
            print(f"already running (pid {pid}): {(base / 'bootstrap').read_text().strip()}")
            return 0
    base.mkdir(parents=True, exist_ok=True)
    kafka = LocalKafka(base / "data", port=args.port, startup_timeout=args.timeout)
    try:
        kafka.start()
    except KafkaStartError as exc:
        print(exc, file=sys.stderr)
        return 1
    pid = kafka.detach()
    (base / "bootstrap").write_text(kafka.bootstrap_servers + "\n")
    pid_file.write_text(f"{pid}\n")
    print(kafka.bootstrap_servers)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    base = Path(args.dir).resolve()
    pid_file = base / "pid"
    if not pid_file.is_file():
        print(f"no {pid_file}: nothing to stop", file=sys.stderr)
        return 0
    pid = int(pid_file.read_text().strip() or "0")
    if pid > 0 and _alive(pid) and _is_our_broker(pid, base / "data"):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    (base / "bootstrap").unlink(missing_ok=True)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    with LocalKafka(args.dir, port=args.port, startup_timeout=args.timeout) as kafka:
        print(
            f"Kafka {KAFKA_VERSION} at {kafka.bootstrap_servers} (data {kafka.data_dir}, "
            f"log {kafka.log_path}); Ctrl-C to stop",
            flush=True,
        )
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            while kafka.is_running():
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        print(f"Kafka exited unexpectedly\n{kafka.log_tail()}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.localkafka",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch the Kafka jars only").set_defaults(func=_cmd_fetch)
    start = sub.add_parser("start", help="start a broker in the background")
    start.add_argument("--dir", required=True, help="state dir (bootstrap, pid, data/)")
    start.add_argument("--port", type=int, default=None, help="listener port (default: free)")
    start.add_argument("--timeout", type=float, default=60.0, help="startup timeout, s")
    start.set_defaults(func=_cmd_start)
    stop = sub.add_parser("stop", help="stop a broker started with start --dir")
    stop.add_argument("--dir", required=True)
    stop.add_argument("--timeout", type=float, default=20.0, help="SIGKILL after this, s")
    stop.set_defaults(func=_cmd_stop)
    run = sub.add_parser("run", help="run a broker in the foreground until Ctrl-C")
    run.add_argument("--dir", default=None, help="data dir to keep (default: temp, removed)")
    run.add_argument("--port", type=int, default=None, help="listener port (default: free)")
    run.add_argument("--timeout", type=float, default=60.0, help="startup timeout, s")
    run.set_defaults(func=_cmd_run)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
