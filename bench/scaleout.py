"""Scaling out, measured on one machine: replicas of the release binary over one PostgreSQL
job database and one S3-compatible bucket (moto), on loopback.

1. Queue dispatch: one API replica takes N tiny jobs (784-16, one epoch on 100 examples of the
   test fixture), and W worker replicas (one job at a time each, one training thread) run them.
   Reported: jobs per minute from the first submission to the last job's end, for each W.
   The work per job is milliseconds of arithmetic; what is measured is the queue's overhead
   per job: claim, lease, progress and epoch records, events, a checkpoint and a model written
   to the bucket, the test-set evaluation of the fixture, and the end recorded.
2. Classification: a model file is imported, then wrk drives `POST /v1/models/ID/classify`
   (one image as JSON) against 1 API replica, then against 2 at once (one wrk per replica),
   for the same time and connections in all. Reported: requests per second in all.

  python3 bench/scaleout.py --database-url postgres://dbn_ci:dbn_ci@127.0.0.1:5432/dbn_ci \
      --s3-endpoint http://127.0.0.1:5077 --model models/mnist-dbn-backprop.safetensors \
      [--workers 1,2,4] [--jobs 40] [--seconds 20] [--connections 16] [--repeat 3]

Needs: the release binary (cargo build --release), psql, wrk, and the two services.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "dbn-serve")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "mnist-subset")


def http(method, url, body=None, content_type="application/json"):
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, json.loads(r.read() or b"null")


def fresh_database(admin_url):
    name = f"dbn_bench_{os.getpid()}_{int(time.time() * 1000) % 10**9}"
    subprocess.run(["psql", "-q", admin_url, "-c", f"CREATE DATABASE {name}"], check=True)
    return admin_url.rsplit("/", 1)[0] + "/" + name


def fresh_bucket(endpoint):
    name = f"dbn-bench-{os.getpid()}-{int(time.time() * 1000) % 10**9}"
    http("PUT", f"{endpoint}/{name}", b"", "application/octet-stream")
    return f"s3://{name}/bench"


class Replica:
    def __init__(self, shared, role, extra=None):
        self.dir = tempfile.mkdtemp(prefix="dbn-bench-")
        env = dict(os.environ, DBN_ROLE=role, DBN_LOG="warn", **shared, **(extra or {}))
        self.proc = subprocess.Popen(
            [BINARY, "serve", "--addr", "127.0.0.1:0", "--data-dir", self.dir,
             "--mnist-dir", FIXTURE],
            env=env, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        m = re.match(r"dbn-serve listening on (\S+)", line)
        if not m:
            raise SystemExit(f"replica did not start: {line!r}")
        self.base = m.group(1)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def shared_env(args):
    return {
        "DBN_DATABASE_URL": fresh_database(args.database_url),
        "DBN_MODEL_STORE": fresh_bucket(args.s3_endpoint),
        "AWS_ENDPOINT": args.s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
    }


TINY_JOB = {
    "architecture": {"hidden": [16], "labels_in_top": False},
    "pretrain": {"epochs": 1},
    "train_examples": 100,
}


def all_jobs(base):
    """Every job, page by page."""
    jobs, cursor = [], None
    while True:
        _, page = http("GET", f"{base}/v1/jobs?limit=100" + (f"&cursor={cursor}" if cursor else ""))
        jobs.extend(page["jobs"])
        cursor = page.get("next_cursor")
        if not cursor:
            return jobs


def dispatch(args, workers):
    shared = shared_env(args)
    api = Replica(shared, "api", {"DBN_QUEUE_CAPACITY": str(args.jobs)})
    pool = [Replica(shared, "worker", {"DBN_TRAIN_THREADS": "1", "DBN_WORKERS": "1"})
            for _ in range(workers)]
    try:
        start = time.monotonic()
        ids = []
        for i in range(args.jobs):
            _, job = http("POST", f"{api.base}/v1/jobs", dict(TINY_JOB, seed=i))
            ids.append(job["id"])
        pending = set(ids)
        while pending:
            for job in all_jobs(api.base):
                if job["id"] in pending and job["status"] in ("succeeded", "failed", "cancelled"):
                    if job["status"] != "succeeded":
                        raise SystemExit(f"job {job['id']} ended {job['status']}: {job}")
                    pending.discard(job["id"])
            if time.monotonic() - start > 900:
                raise SystemExit(f"{len(pending)} jobs still pending after 900 s")
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        attempts = sum(j["attempts"] for j in all_jobs(api.base))
        return {"workers": workers, "jobs": args.jobs, "seconds": round(elapsed, 2),
                "jobs_per_minute": round(args.jobs / elapsed * 60, 1), "attempts": attempts}
    finally:
        for r in [api, *pool]:
            r.stop()


def wrk(base, model, seconds, connections, image):
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    body = json.dumps({"pixels": [image]})
    script.write('wrk.method = "POST"\n'
                 'wrk.headers["Content-Type"] = "application/json"\n'
                 f"wrk.body = {json.dumps(body)}\n")
    script.close()
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name,
         f"{base}/v1/models/{model}/classify"],
        stdout=subprocess.PIPE, text=True)


def requests_per_second(output):
    m = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return float(m.group(1)), int(non2xx.group(1)) if non2xx else 0


def classification(args):
    shared = shared_env(args)
    # Enough inference permits that no call is turned away with 429 in either setting.
    permits = {"DBN_INFERENCE_CONCURRENCY": str(args.connections * 2)}
    first = Replica(shared, "api", permits)
    second = Replica(shared, "api", permits)
    try:
        with open(args.model, "rb") as f:
            status, model = http("POST", f"{first.base}/v1/models", f.read(),
                                 "application/octet-stream")
        model_id = model["id"]
        image = [round((i % 28) / 27.0, 3) for i in range(784)]
        # Both replicas load the model before the clock starts.
        for r in (first, second):
            http("POST", f"{r.base}/v1/models/{model_id}/classify", {"pixels": [image]})
        rows = []
        for replicas in ([first], [first, second]):
            per = max(1, args.connections // len(replicas))
            runs = [wrk(r.base, model_id, args.seconds, per, image) for r in replicas]
            results = [requests_per_second(p.communicate()[0]) for p in runs]
            rows.append({"api_replicas": len(replicas), "connections": per * len(replicas),
                         "requests_per_second": round(sum(r[0] for r in results), 1),
                         "non_2xx": sum(r[1] for r in results)})
        return rows
    finally:
        first.stop()
        second.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--s3-endpoint", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-dispatch", action="store_true")
    ap.add_argument("--skip-classification", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(BINARY):
        raise SystemExit("build the release binary first: cargo build --release")
    print(f"machine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    # Rounds interleave the configurations, so a slow spell of the shared machine hits all.
    for round_ in range(args.repeat):
        if not args.skip_dispatch:
            for w in [int(x) for x in args.workers.split(",")]:
                print(json.dumps({"round": round_, "dispatch": dispatch(args, w)}), flush=True)
        if not args.skip_classification:
            for row in classification(args):
                print(json.dumps({"round": round_, "classification": row}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
