"""Sustained classification load against a running server, for a fixed time, by many clients
with keep-alive connections. Prints throughput, the latency percentiles of answered calls and
every status seen; any status other than 200 and the documented 429 fails the run.

  python3 bench/load.py --base http://127.0.0.1:8080 --model ID --mnist-dir ../shared/data/mnist \
      --mode json|png|batch256 [--clients 16] [--seconds 60] [--server-pid PID]

Modes: `json`, one image as JSON pixels per call; `png`, one 84x84 PNG per call (the server's
MNIST preprocessing runs on each); `batch256`, 256 images as JSON pixels per call. With
--server-pid the server's resident memory and open descriptors are read from /proc before and
after. Standard library only; the clients share the machine with the server.
"""
import argparse
import http.client
import json
import os
import sys
import threading
import time
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(__file__))
from serve_mnist import pct, png, read_idx  # noqa: E402


def proc_stats(pid):
    if not pid:
        return None
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_mb": rss, "fds": fds}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="http://127.0.0.1:8080")
    ap.add_argument("--model", required=True)
    ap.add_argument("--mnist-dir", default="../shared/data/mnist")
    ap.add_argument("--mode", choices=["json", "png", "batch256"], default="json")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--server-pid", type=int, default=0)
    args = ap.parse_args()

    (n, _, _), pixels = read_idx(os.path.join(args.mnist_dir, "t10k-images-idx3-ubyte.gz"))
    images = [pixels[i * 784 : (i + 1) * 784] for i in range(n)]
    if args.mode == "json":
        bodies = [json.dumps({"pixels": [[p / 255 for p in im]]}).encode() for im in images[:500]]
        ctype = "application/json"
    elif args.mode == "png":
        bodies = [png(im) for im in images[:500]]
        ctype = "image/png"
    else:
        bodies = [
            json.dumps({"pixels": [[p / 255 for p in im] for im in images[k : k + 256]]}).encode()
            for k in range(0, 256 * 8, 256)
        ]
        ctype = "application/json"
    images_per_call = 256 if args.mode == "batch256" else 1

    url = urlparse(args.base)
    path = f"/v1/models/{args.model}/classify"
    stop = time.perf_counter() + args.seconds
    lock = threading.Lock()
    latencies, statuses = [], {}

    def client(k):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        mine, seen = [], {}
        i = k
        while time.perf_counter() < stop:
            body = bodies[i % len(bodies)]
            i += args.clients
            started = time.perf_counter()
            try:
                conn.request("POST", path, body, {"content-type": ctype})
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException) as e:
                status = f"error {type(e).__name__}"
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            elapsed = time.perf_counter() - started
            seen[status] = seen.get(status, 0) + 1
            if status == 200:
                mine.append(elapsed)
        with lock:
            latencies.extend(mine)
            for s, c in seen.items():
                statuses[s] = statuses.get(s, 0) + c

    before = proc_stats(args.server_pid)
    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    after = proc_stats(args.server_pid)

    ok = len(latencies)
    print(f"mode {args.mode}, {args.clients} clients, {wall:.1f} s")
    print(f"statuses: {dict(sorted((str(k), v) for k, v in statuses.items()))}")
    print(f"answered: {ok} calls, {ok / wall:.0f} calls/s, {ok * images_per_call / wall:.0f} images/s")
    if ok:
        ms = [v * 1000 for v in latencies]
        print(f"latency ms: p50 {pct(ms, 0.5):.2f}  p99 {pct(ms, 0.99):.2f}  p99.9 {pct(ms, 0.999):.2f}  max {max(ms):.2f}")
    if before:
        print(f"server before: {before}, after: {after}")
    bad = {k: v for k, v in statuses.items() if k not in (200, 429)}
    if bad:
        print(f"FAILED: unexpected statuses {bad}")
        sys.exit(1)


if __name__ == "__main__":
    main()
