"""Load: simulated annotators clicking over the annotation websocket, p50 / p95 click-to-mask.

Each simulated annotator opens its own demo photo on the annotation websocket (as the page
does), waits for ``ready``, then clicks every 1-2 s after seeing the previous answer (the SA
paper's 14 s per mask with about 6 clicks), starting a new object every 6 clicks; the click
to mask latency is the round trip of each click as the page measures it. For each number of
annotators the platform serves them for a warm-up, then ``--seconds`` of measurement.

The platform is started as the README starts it: one web process (daphne) with the embedded
worker, on the embedded defaults (SQLite, filesystem broker, in-memory channel layer), in a
fresh data dir. ``--web-processes 2`` starts a second web process on the same data behind the
Redis channel layer (``--redis``, default the local server), and the annotators are spread
over both ports, as a load balancer would.

    nice -n 19 .venv/bin/python bench/load_clicks.py                  # 1, 4, 16, 32
    nice -n 19 .venv/bin/python bench/load_clicks.py --web-processes 2
    .venv/bin/python bench/load_clicks.py --annotators 1,2 --seconds 10 --warmup 2  # smoke

It prints one line per level, then the number of annotators at which p95 passes the
``--limit-ms`` (150 ms) target; ``--json FILE`` keeps the figures. It asserts nothing: the
figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.served import (  # noqa: E402
    SERVICE_VARIABLES,
    Served,
    free_port,
    serve_platform,
    token,
)

CLICKS_PER_OBJECT = 6  # then the annotator starts on another object


@dataclass
class Level:
    annotators: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    errors: int = 0
    not_ready: int = 0

    def summary(self) -> dict[str, Any]:
        times = sorted(self.latencies_ms)
        server = sorted(self.server_ms)
        return {
            "annotators": self.annotators,
            "clicks": len(times),
            "clicks_per_s": round(len(times) / self.seconds, 2),
            "p50_ms": round(statistics.median(times), 1) if times else None,
            "p95_ms": round(percentile(times, 0.95), 1) if times else None,
            "max_ms": round(times[-1], 1) if times else None,
            "server_p50_ms": round(statistics.median(server), 1) if server else None,
            "errors": self.errors,
            "not_ready": self.not_ready,
        }


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ordered list."""
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


# --------------------------------------------------------------------------- the platform


@contextmanager
def second_web_process(served: Served, env_extra: dict[str, str]) -> Iterator[str]:
    """Another ``manage.py serve --no-worker`` on the same data dir; yields its URL."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update({"MASKLOOP_DATA_DIR": str(served.data_dir), **env_extra})
    port = free_port()
    with (served.data_dir / "serve-2.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port), "--no-worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=5).read()
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the second web process did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


# --------------------------------------------------------------------------- annotators


async def annotator(
    number: int,
    url: str,
    origin: str,
    ready: asyncio.Queue[bool],
    go: asyncio.Event,
    window: dict[str, float],
    level: Level,
) -> None:
    """One annotator: open, wait for the start, click until the window ends."""
    from websockets.asyncio.client import connect

    rng = random.Random(number)
    try:
        socket = await connect(url, origin=origin, open_timeout=600, max_size=None)
    except Exception:
        level.not_ready += 1
        await ready.put(False)
        return
    async with socket:
        try:
            opened = json.loads(await asyncio.wait_for(socket.recv(), 600))
        except Exception:
            opened = {}
        if opened.get("type") != "ready":
            level.not_ready += 1
            await ready.put(False)
            return
        await ready.put(True)
        await go.wait()
        width, height = opened["image"]["width"], opened["image"]["height"]
        points: list[list[float]] = []
        labels: list[int] = []
        message_id = 0
        while True:
            await asyncio.sleep(rng.uniform(1.0, 2.0))  # looking at the mask, choosing a spot
            if time.monotonic() >= window["end"]:
                return
            if len(points) >= CLICKS_PER_OBJECT:
                points, labels = [], []
            points.append([rng.uniform(0, width - 1), rng.uniform(0, height - 1)])
            labels.append(1 if not labels or rng.random() < 0.6 else 0)
            message_id += 1
            prompt = {
                "type": "predict",
                "id": message_id,
                "points": points,
                "labels": labels,
                "multimask": True,
            }
            sent = time.monotonic()
            await socket.send(json.dumps(prompt))
            while True:  # the answer to this click (nothing else is in flight)
                answer = json.loads(await socket.recv())
                if answer.get("id") == message_id:
                    break
            elapsed_ms = (time.monotonic() - sent) * 1000
            if answer.get("type") != "prediction":
                level.errors += 1
                continue
            if window["start"] <= sent and time.monotonic() <= window["end"]:
                level.latencies_ms.append(elapsed_ms)
                if answer.get("ms") is not None:
                    level.server_ms.append(float(answer["ms"]))


async def run_level(
    count: int, sockets: list[str], origin: str, *, warmup: float, seconds: float
) -> Level:
    level = Level(annotators=count, seconds=seconds)
    ready: asyncio.Queue[bool] = asyncio.Queue()
    go = asyncio.Event()
    window = {"start": float("inf"), "end": float("inf")}
    tasks = [
        asyncio.create_task(
            annotator(k, sockets[k % len(sockets)], origin, ready, go, window, level)
        )
        for k in range(count)
    ]
    for _ in range(count):  # everyone has opened an image (embeddings computed) or failed
        await ready.get()
    now = time.monotonic()
    window["start"], window["end"] = now + warmup, now + warmup + seconds
    go.set()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):  # a socket that died: said, and counted
            level.errors += 1
            print(f"  annotator failed at {count} annotators: {outcome!r}", file=sys.stderr)
    return level


# --------------------------------------------------------------------------- the sweep


def socket_urls(count: int, bases: list[str], key: str, image_ids: list[int]) -> list[str]:
    """Annotator k opens photo k mod n, on web process k mod m (a round-robin balancer)."""
    urls = []
    for k in range(count):
        base = bases[k % len(bases)].replace("http", "ws", 1)
        urls.append(f"{base}/ws/images/{image_ids[k % len(image_ids)]}/annotate/?token={key}")
    return urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", default="1,4,16,32", help="levels, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured per level")
    parser.add_argument("--warmup", type=float, default=10.0, help="clicks not counted")
    parser.add_argument("--limit-ms", type=float, default=150.0, help="the p95 target")
    parser.add_argument("--web-processes", type=int, choices=(1, 2), default=1)
    parser.add_argument(
        "--redis", default=None, help="channel layer (default: none for one web process, "
        "redis://127.0.0.1:6379/15 for two)"
    )  # fmt: skip
    parser.add_argument("--checkpoint", help="starter checkpoint (default: the shipped one)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    levels = [int(v) for v in args.annotators.split(",") if v.strip()]

    # The shipped model by default ("": GrabCut when none is shipped), or the one given.
    env = {
        "MASKLOOP_STARTER_CHECKPOINT": str(Path(args.checkpoint).resolve())
        if args.checkpoint
        else ""
    }
    redis = args.redis or ("redis://127.0.0.1:6379/15" if args.web_processes == 2 else None)
    if redis:
        env["REDIS_URL"] = redis

    results: list[dict[str, Any]] = []
    with ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        served = stack.enter_context(serve_platform(Path(folder), env))
        bases = [served.url]
        if args.web_processes == 2:
            bases.append(stack.enter_context(second_web_process(served, env)))
        key = token(served)
        project = served.request("/api/projects/", token=key)["results"][0]
        listing = served.request(f"/api/projects/{project['id']}/images/", token=key)
        image_ids = [row["id"] for row in listing["results"]]
        print(
            f"{len(bases)} web process(es) + 1 worker, channel layer "
            f"{'Redis ' + redis if redis else 'in-memory'}; {len(image_ids)} demo photos; "
            f"{args.warmup:g} s warm-up + {args.seconds:g} s per level"
        )
        print("annotators  clicks  clicks/s  p50 ms  p95 ms  max ms  server p50  errors")
        for count in levels:
            level = asyncio.run(
                run_level(
                    count,
                    socket_urls(count, bases, key, image_ids),
                    served.url,
                    warmup=args.warmup,
                    seconds=args.seconds,
                )
            )
            row = level.summary()
            results.append(row)
            print(
                f"{row['annotators']:>10}  {row['clicks']:>6}  {row['clicks_per_s']:>8}  "
                f"{row['p50_ms']!s:>6}  {row['p95_ms']!s:>6}  {row['max_ms']!s:>6}  "
                f"{row['server_p50_ms']!s:>10}  {row['errors']:>6}"
                + (f"  ({row['not_ready']} never ready)" if row["not_ready"] else "")
            )
    measured = [r for r in results if r["p95_ms"] is not None]
    if len(measured) < len(results):
        print(
            "no click was answered inside the window at "
            + ", ".join(str(r["annotators"]) for r in results if r["p95_ms"] is None)
            + " annotators: lengthen --seconds"
        )
    over = [r for r in measured if r["p95_ms"] > args.limit_ms]
    if over:
        first = over[0]
        below = [r["annotators"] for r in measured if r["annotators"] < first["annotators"]]
        print(
            f"p95 passes {args.limit_ms:g} ms at {first['annotators']} annotators"
            + (f" (under it at {max(below)})" if below else " (already at the first level)")
        )
    elif measured:
        top = max(r["annotators"] for r in measured)
        print(f"p95 stays under {args.limit_ms:g} ms up to {top} annotators")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"config": {k: str(v) for k, v in vars(args).items()}, "levels": results},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
