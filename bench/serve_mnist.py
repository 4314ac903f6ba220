"""End to end through HTTP on the real MNIST test set: imports a model into a running server,
classifies all 10,000 test images three ways and prints error rates, latencies and throughput.

  python3 bench/serve_mnist.py --base http://127.0.0.1:8080 --model models/mnist-dbn.safetensors \
      --mnist-dir ../shared/data/mnist [--concurrency 4]

1. JSON pixels in batches of 500 (POST /v1/models/{id}/classify): must give the model's own
   free-energy test error, since the pixels are passed through unchanged.
2. One PNG per request, each test image inverted to dark ink on white and scaled 3x: the
   server's MNIST preprocessing (crop, scale to 20 px, centre of mass) runs on every image.
3. OIP v2 infer in batches of 500.
Standard library only."""
import argparse
import gzip
import json
import statistics
import struct
import time
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor


def read_idx(path):
    data = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return shape, data[4 + 4 * dims :]


def post(url, body, ctype):
    req = urllib.request.Request(url, body, {"content-type": ctype})
    started = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        out = json.load(r)
    return out, time.perf_counter() - started


def png(pixels, scale=3):
    side = 28 * scale
    rows = b"".join(
        b"\x00" + bytes(255 - pixels[(y // scale) * 28 + x // scale] for x in range(side))
        for y in range(side)
    )

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="http://127.0.0.1:8080")
    ap.add_argument("--model", required=True)
    ap.add_argument("--mnist-dir", required=True)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--png-scale", type=int, default=3, help="upscaling of the PNGs (nearest neighbour)")
    args = ap.parse_args()

    (n, _, _), images = read_idx(f"{args.mnist_dir}/t10k-images-idx3-ubyte.gz")
    _, labels = read_idx(f"{args.mnist_dir}/t10k-labels-idx1-ubyte.gz")
    rows = [images[i * 784 : (i + 1) * 784] for i in range(n)]

    model_bytes = open(args.model, "rb").read()
    model, _ = post(f"{args.base}/v1/models", model_bytes, "application/octet-stream")
    mid = model["id"]
    print(f"imported {args.model} as {mid}: sizes {model['sizes']}, card test_error {model['metrics'].get('test_error')}")

    # 1. JSON pixels, batches of 500.
    errors, times = 0, []
    started = time.perf_counter()
    for b in range(0, n, 500):
        body = json.dumps({"pixels": [[p / 255 for p in r] for r in rows[b : b + 500]]}).encode()
        out, t = post(f"{args.base}/v1/models/{mid}/classify", body, "application/json")
        times.append(t)
        errors += sum(p["label"] != labels[b + i] for i, p in enumerate(out["predictions"]))
    wall = time.perf_counter() - started
    print(f"json pixels, batches of 500: error {100 * errors / n:.2f}% ({errors}/{n}); "
          f"median {1000 * statistics.median(times):.0f} ms/batch; {n / wall:.0f} images/s end to end")

    # 2. One PNG per request, `concurrency` clients.
    pngs = [png(r, args.png_scale) for r in rows]

    def one(i):
        out, t = post(f"{args.base}/v1/models/{mid}/classify", pngs[i], "image/png")
        return out["predictions"][0]["label"] != labels[i], t

    started = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - started
    errors = sum(e for e, _ in results)
    lat = [t for _, t in results]
    side = 28 * args.png_scale
    print(f"png (dark on white, {side}x{side}), one per request, {args.concurrency} clients: error {100 * errors / n:.2f}% "
          f"({errors}/{n}); latency median {1000 * statistics.median(lat):.2f} ms, p99 {1000 * pct(lat, 0.99):.2f} ms; "
          f"{n / wall:.0f} requests/s")

    # 3. OIP v2 infer, batches of 500.
    errors = 0
    for b in range(0, n, 500):
        batch = rows[b : b + 500]
        body = json.dumps({"inputs": [{"name": "input", "shape": [len(batch), 784], "datatype": "FP32",
                                       "data": [p / 255 for r in batch for p in r]}]}).encode()
        out, _ = post(f"{args.base}/v2/models/{mid}/infer", body, "application/json")
        got = out["outputs"][1]["data"]
        errors += sum(got[i] != labels[b + i] for i in range(len(batch)))
    print(f"oip v2 infer, batches of 500: error {100 * errors / n:.2f}% ({errors}/{n})")


if __name__ == "__main__":
    main()
