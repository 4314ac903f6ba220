"""Mixed load against a running server for a fixed time, watching the server's memory and open
descriptors. Standard library only.

  python3 bench/soak.py --base http://127.0.0.1:8080 --model ID --server-pid PID \
      [--minutes 10] [--warmup 120] [--mnist-dir ../shared/data/mnist]

The clients, all at once:
- 6 classify clients: one image as JSON, one PNG, or a batch of 64, in turn;
- 2 sample clients: 10 samples of a random digit after 100 Gibbs steps, or a chain;
- 1 job client: submits a small training job (784-100 with labels, 2,000 MNIST images, 2
  epochs) every few seconds; cancels half of them at once, lets the rest finish and deletes
  their models, so the model store stays the same size;
- 2 stream clients: open a job's SSE stream, read a few events and drop the connection.

Every 10 s the server's resident memory (VmRSS) and open descriptors are read from /proc.
Each training job holds its dataset while it runs, so the memory rises and falls with the jobs:
the level after warm-up is the median of the minute that follows it, and the level at the end
the median of the last minute. The run passes when no call got a status other than the
expected ones, the level at the end and the memory once the clients have stopped are within
10 % of the level after warm-up, and the descriptors once the clients have stopped are no more
than after warm-up.
"""
import argparse
import http.client
import json
import os
import random
import statistics
import sys
import threading
import time
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(__file__))
from serve_mnist import png, read_idx  # noqa: E402
from load import proc_stats  # noqa: E402

JOB = {
    "name": "soak",
    "dataset": "mnist",
    "train_examples": 2000,
    "architecture": {"hidden": [100], "labels_in_top": True},
    "pretrain": {"epochs": 2, "learning_rate": 0.05},
}


class Client:
    """One keep-alive connection; reconnects after a transport error."""

    def __init__(self, url):
        self.url = url
        self.conn = None

    def call(self, method, path, body=None, ctype="application/json"):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=60)
        try:
            headers = {"content-type": ctype} if body is not None else {}
            self.conn.request(method, path, body, headers)
            r = self.conn.getresponse()
            data = r.read()
            return r.status, data
        except (OSError, http.client.HTTPException) as e:
            self.conn.close()
            self.conn = None
            return f"error {type(e).__name__}", b""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="http://127.0.0.1:8080")
    ap.add_argument("--model", required=True)
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--mnist-dir", default="../shared/data/mnist")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=120, help="seconds before the baseline")
    args = ap.parse_args()

    url = urlparse(args.base)
    (n, _, _), pixels = read_idx(os.path.join(args.mnist_dir, "t10k-images-idx3-ubyte.gz"))
    images = [pixels[i * 784 : (i + 1) * 784] for i in range(300)]
    one_json = [json.dumps({"pixels": [[p / 255 for p in im]]}).encode() for im in images]
    pngs = [png(im) for im in images[:100]]
    batch = json.dumps({"pixels": [[p / 255 for p in im] for im in images[:64]]}).encode()

    stop = time.monotonic() + args.minutes * 60
    lock = threading.Lock()
    counts = {}
    unexpected = {}
    job_ids = []

    def record(kind, status, expected=(200,)):
        with lock:
            key = (kind, status)
            counts[key] = counts.get(key, 0) + 1
            if status not in expected:
                unexpected[key] = unexpected.get(key, 0) + 1

    def classify(k):
        c = Client(url)
        path = f"/v1/models/{args.model}/classify"
        i = k
        while time.monotonic() < stop:
            i += 1
            which = i % 3
            if which == 0:
                s, _ = c.call("POST", path, one_json[i % len(one_json)])
            elif which == 1:
                s, _ = c.call("POST", path, pngs[i % len(pngs)], "image/png")
            else:
                s, _ = c.call("POST", path, batch)
            record("classify", s, (200, 429))

    def sample(k):
        c = Client(url)
        rng = random.Random(k)
        while time.monotonic() < stop:
            label = rng.randrange(10)
            if rng.random() < 0.5:
                body = {"label": label, "count": 10, "gibbs_steps": 100, "seed": rng.randrange(1 << 30)}
                s, _ = c.call("POST", f"/v1/models/{args.model}/samples", json.dumps(body).encode())
            else:
                body = {"label": label, "count": 4, "gibbs_steps": 100, "seed": rng.randrange(1 << 30)}
                s, _ = c.call("POST", f"/v1/models/{args.model}/chain", json.dumps(body).encode())
            record("sample", s, (200, 429))

    def jobs():
        c = Client(url)
        rng = random.Random(7)
        pending = []
        while time.monotonic() < stop:
            spec = dict(JOB, seed=rng.randrange(1 << 30))
            s, data = c.call("POST", "/v1/jobs", json.dumps(spec).encode())
            record("submit", s, (202, 429))
            if s == 202:
                jid = json.loads(data)["id"]
                with lock:
                    job_ids.append(jid)
                if rng.random() < 0.5:
                    time.sleep(rng.random() * 2)
                    s, _ = c.call("POST", f"/v1/jobs/{jid}/cancel", b"")
                    record("cancel", s, (200, 202, 409))
                else:
                    pending.append(jid)
            for jid in list(pending):
                s, data = c.call("GET", f"/v1/jobs/{jid}")
                record("poll", s)
                if s != 200:
                    continue
                job = json.loads(data)
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    pending.remove(jid)
                    if job.get("model_id"):
                        s, _ = c.call("DELETE", f"/v1/models/{job['model_id']}")
                        record("delete", s, (200, 204))
            time.sleep(3)

    def streams(k):
        rng = random.Random(100 + k)
        while time.monotonic() < stop:
            with lock:
                jid = rng.choice(job_ids) if job_ids else None
            if jid is None:
                time.sleep(1)
                continue
            # Longer than the server's 15 s keep-alive, so a quiet stream is not a failure.
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=40)
            try:
                conn.request("GET", f"/v1/jobs/{jid}/events")
                r = conn.getresponse()
                status = r.status
                # Read a few lines, then drop the connection mid-stream.
                for _ in range(rng.randrange(1, 20)):
                    if not r.fp.readline():
                        break
            except (OSError, http.client.HTTPException) as e:
                status = f"error {type(e).__name__}"
            finally:
                conn.close()
            record("stream", status)
            time.sleep(rng.random())

    threads = [threading.Thread(target=classify, args=(k,)) for k in range(6)]
    threads += [threading.Thread(target=sample, args=(k,)) for k in range(2)]
    threads += [threading.Thread(target=jobs)]
    threads += [threading.Thread(target=streams, args=(k,)) for k in range(2)]
    began = time.monotonic()
    for t in threads:
        t.start()
    samples = []
    while any(t.is_alive() for t in threads):
        time.sleep(10)
        at = time.monotonic() - began
        st = proc_stats(args.server_pid)
        samples.append((at, st))
        print(f"{at:6.0f} s  rss {st['rss_mb']} MB  fds {st['fds']}", flush=True)
    for t in threads:
        t.join()
    time.sleep(20)  # let the last job end and the server close the dropped connections
    quiet = proc_stats(args.server_pid)
    total = samples[-1][0]
    after_warmup = [s for at, s in samples if args.warmup <= at < args.warmup + 60]
    last_minute = [s for at, s in samples if at >= total - 60]
    level = statistics.median(s["rss_mb"] for s in after_warmup)
    end = statistics.median(s["rss_mb"] for s in last_minute)
    fds = max(s["fds"] for s in after_warmup)
    peak = max(s["rss_mb"] for _, s in samples)
    print(f"calls: {dict(sorted((f'{k} {s}', v) for (k, s), v in counts.items()))}")
    print(f"jobs submitted: {len(job_ids)}")
    print(
        f"rss MB: after warm-up {level:.0f}, last minute {end:.0f}, clients stopped "
        f"{quiet['rss_mb']}, peak {peak}; descriptors: after warm-up {fds}, clients stopped "
        f"{quiet['fds']}"
    )
    failed = False
    if unexpected:
        print(f"FAILED: unexpected statuses {unexpected}")
        failed = True
    for what, value in [("in the last minute", end), ("once the clients stopped", quiet["rss_mb"])]:
        if value > level * 1.10:
            print(f"FAILED: resident memory {what} {value / level - 1:+.1%} against after warm-up")
            failed = True
    if quiet["fds"] > fds:
        print(f"FAILED: descriptors grew from {fds} to {quiet['fds']}")
        failed = True
    if not failed:
        print(
            f"PASSED: rss {end / level - 1:+.1%} (last minute) and {quiet['rss_mb'] / level - 1:+.1%} "
            f"(clients stopped) against after warm-up; descriptors {fds} -> {quiet['fds']}"
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
