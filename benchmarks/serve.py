"""`discff serve` under load: N concurrent clients on loopback, bounded in count and time.

Starts the real server (`discff serve`, a subprocess) on a free port over an index, then measures
  1. shortlist-only queries: p50/p99 latency, errors, the server's RSS before and after them;
  2. reranked queries: p50/p99 latency and errors (the first rerank, which loads the diffusion
     model, is timed on its own).
Prints one JSON document. Example (the README's figure):

    discff index build discff-demo/images --index discff-demo/.discff --clip demo --model demo
    python benchmarks/serve.py --index discff-demo/.discff --clients 4 --requests 1000 \
        --rerank 5 --rerank-requests 16 --steps 2 --levels 0.5
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("left of", "right of", "above", "below")


def queries(count: int, seed: int = 0) -> list[str]:
    """Demo-world captions, varied so no two consecutive queries hit the text cache."""
    rng = random.Random(seed)
    return [f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)} {rng.choice(RELATIONS)} a {rng.choice(COLOURS)} "
            f"{rng.choice(SHAPES)}" for _ in range(count)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "discff_cli", "serve", "--index", args.index, "--port", str(port),
           "--log-level", "warning", "--queue", str(max(args.clients * 2, 8)), "--timeout", str(args.time_limit),
           "--steps", str(args.steps), "--levels", args.levels, "--threads", str(args.threads),
           "--shortlist-threads", str(args.shortlist_threads), "--max-rerank", str(max(args.rerank, 1))]
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read().strip()}")
        try:
            get(http.client.HTTPConnection("127.0.0.1", port, timeout=5), "/healthz")
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not answer /healthz within 180 s")


def get(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response.status


def load(port: int, paths: list[str], clients: int, time_limit: float) -> dict:
    """`clients` threads, each on one keep-alive connection, share `paths`; stops at the time limit."""
    todo = iter(paths)
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.monotonic() + time_limit

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=time_limit)
        while time.monotonic() < stop_at:
            with lock:
                path = next(todo, None)
            if path is None:
                return
            start = time.perf_counter()
            try:
                status = get(conn, path)
            except (OSError, http.client.HTTPException) as exc:
                status, conn = repr(exc), http.client.HTTPConnection("127.0.0.1", port, timeout=time_limit)
            seconds = time.perf_counter() - start
            with lock:
                latencies.append(seconds)
                if status != 200:
                    errors.append(str(status))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"requests": len(latencies), "planned": len(paths), "errors": len(errors), "error_kinds": sorted(set(errors)),
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
            "requests_per_s": round(len(latencies) / wall, 1) if wall else None}


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))] * 1000, 2)


def search_path(query: str, top: int, rerank: int = 0) -> str:
    return "/search?" + urlencode({"q": query, "top": top, **({"rerank": rerank} if rerank else {})})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="discff-demo/.discff")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=1000, help="shortlist-only requests")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--rerank", type=int, default=5, help="rerank depth (0: skip the rerank phase)")
    parser.add_argument("--rerank-requests", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--levels", default="0.5")
    parser.add_argument("--threads", type=int, default=0, help="server's rerank threads (0: torch's default)")
    parser.add_argument("--shortlist-threads", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds per phase, at most")
    args = parser.parse_args()
    if not Path(args.index, "manifest.json").is_file():
        raise SystemExit(f"no index at {args.index}; build one with `discff demo` or `discff index build`")

    port = free_port()
    server = start_server(args, port)
    try:
        warm = load(port, [search_path(q, args.top) for q in queries(20, seed=1)], 1, args.time_limit)
        rss_before = rss_mib(server.pid)
        shortlist = load(port, [search_path(q, args.top) for q in queries(args.requests)], args.clients, args.time_limit)
        rss_after = rss_mib(server.pid)
        result = {"index": args.index, "clients": args.clients, "cpus": os.cpu_count(), "warm_up": warm,
                  "shortlist": shortlist, "rss_mib_before": round(rss_before, 1), "rss_mib_after": round(rss_after, 1)}
        if args.rerank:
            first = load(port, [search_path("a red circle above a blue square", args.top, args.rerank)], 1,
                         args.time_limit)
            paths = [search_path(q, args.top, args.rerank) for q in queries(args.rerank_requests, seed=2)]
            result.update({"rerank_settings": {"depth": args.rerank, "steps": args.steps, "levels": args.levels},
                           "first_rerank_with_model_load": first,
                           "rerank": load(port, paths, args.clients, args.time_limit),
                           "rss_mib_after_reranks": round(rss_mib(server.pid), 1)})
        print(json.dumps(result, indent=2))
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
