"""Click-to-mask round trip over the annotation websocket, as an annotator's page sees it.

Starts the platform as the README's first command does (own data dir, embedded defaults),
logs in, opens a demo photo, waits for its embedding, then sends clicks one at a time (each
waits for its answer) and prints p50 / p95 / max in milliseconds.

    .venv/bin/python bench/click_latency.py [--clicks 200] [--checkpoint model/weights/starter.pth]
        [--object-clicks 5]

Without --checkpoint the shipped starter model answers (GrabCut where none is shipped).
``--object-clicks K``: the clicks come in objects of K, each after the first near it and
continuing from the previous answer (the page's ``mask_input`` handle), as an annotator
corrects a mask; with zoom-in (``MASKLOOP_ZOOM_IN``, on by default) the second click of an
object embeds a crop, and the figures are given for first and later clicks apart.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.served import serve_platform, token  # noqa: E402


def session_cookie(base: str) -> str:
    """Log in through the login form and return the session cookie."""
    import http.cookiejar

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(base + "/login/").read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    body = f"username=admin&password=maskloop-demo&csrfmiddlewaretoken={csrf}".encode()
    request = urllib.request.Request(
        base + "/login/", data=body, headers={"Referer": base + "/login/"}
    )
    opener.open(request).read()
    return "; ".join(f"{c.name}={c.value}" for c in jar)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=200)
    parser.add_argument(
        "--checkpoint", help="starter checkpoint to serve (its .json card beside it)"
    )
    parser.add_argument("--image", default="coffee.png")
    parser.add_argument("--object-clicks", type=int, default=1, help="clicks per object")
    args = parser.parse_args()

    from websockets.sync.client import connect

    # "" = the shipped starter (the test helper serves GrabCut unless told otherwise).
    env = {
        "MASKLOOP_STARTER_CHECKPOINT": str(Path(args.checkpoint).resolve())
        if args.checkpoint
        else ""
    }
    with tempfile.TemporaryDirectory() as folder, serve_platform(Path(folder), env) as served:
        key = token(served)
        project = served.request("/api/projects/", token=key)["results"][0]
        images = served.request(
            f"/api/projects/{project['id']}/images/?file_name={args.image}", token=key
        )
        image = images["results"][0]
        cookie = session_cookie(served.url)
        url = served.url.replace("http", "ws") + f"/ws/images/{image['id']}/annotate/"
        with connect(url, additional_headers={"Cookie": cookie, "Origin": served.url}) as socket:
            ready = json.loads(socket.recv(timeout=300))
            print(f"model {ready['model']}, embedding {ready['embedding']} in {ready['ms']} ms")
            rng = random.Random(0)
            width, height = image["width"], image["height"]
            times: dict[str, list[float]] = {"first": [], "later": []}
            points: list[list[float]] = []
            labels: list[int] = []
            handle = None
            for click in range(args.clicks + 10):
                if click % args.object_clicks == 0:
                    points, labels, handle = [], [], None
                    points.append([rng.uniform(0, width - 1), rng.uniform(0, height - 1)])
                    labels.append(1)
                else:
                    x, y = points[0]
                    points.append(
                        [
                            min(max(x + rng.uniform(-40, 40), 0), width - 1),
                            min(max(y + rng.uniform(-40, 40), 0), height - 1),
                        ]
                    )
                    labels.append(len(points) % 2)
                message = {
                    "type": "predict",
                    "id": click,
                    "points": points,
                    "labels": labels,
                    "multimask": len(points) == 1,
                    "mask_input": None if handle is None else f"{handle}:0",
                }
                start = time.perf_counter()
                socket.send(json.dumps(message))
                answer = json.loads(socket.recv(timeout=120))
                elapsed = (time.perf_counter() - start) * 1000
                if answer["type"] != "prediction":
                    raise SystemExit(f"error answer: {answer}")
                handle = answer.get("handle")
                if click >= 10:  # the first clicks warm up the process
                    times["first" if len(points) == 1 else "later"].append(elapsed)
    for kind, values in times.items():
        if not values:
            continue
        values.sort()
        p95 = values[int(0.95 * (len(values) - 1))]
        print(
            f"{kind} clicks of an object: {len(values)}, round trip ms: p50 "
            f"{statistics.median(values):.1f}, p95 {p95:.1f}, max {values[-1]:.1f} "
            f"(model {ready['model']})"
        )


if __name__ == "__main__":
    main()
