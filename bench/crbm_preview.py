"""Continuations of held-out moving-digit videos through the running server: imports a sequence
model, asks POST /v1/models/{id}/continue for each example (mean field and sampled), and
writes the animated PNGs, a still strip per example (top row: the given frames and the truth;
bottom row: the same start and the sampled continuation) and a table of squared errors per frame against what really came
next, with the copy-the-last-frame baseline.

  python3 bench/crbm_preview.py --base http://127.0.0.1:8080 \
      --model models/moving-mnist-crbm.safetensors --examples 0 1 2 --steps 8 --out bench/raw

Standard library only."""
import argparse
import json
import struct
import urllib.request
import zlib


def call(url, body=None, ctype="application/json", accept="application/json"):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"content-type": ctype, "accept": accept})
    with urllib.request.urlopen(req) as r:
        raw = r.read()
    return raw if accept == "image/png" else json.loads(raw)


def strip_png(rows, side):
    """Rows of frames (lists of side*side values in [0, 1]) as one greyscale PNG, 1-px gaps."""
    cols = max(len(r) for r in rows)
    width, height = cols * (side + 1) + 1, len(rows) * (side + 1) + 1
    pixels = bytearray([40] * width * height)
    for r, frames in enumerate(rows):
        for c, frame in enumerate(frames):
            x0, y0 = c * (side + 1) + 1, r * (side + 1) + 1
            for i, v in enumerate(frame):
                pixels[(y0 + i // side) * width + x0 + i % side] = round(min(max(v, 0.0), 1.0) * 255)
    raw = b"".join(b"\x00" + bytes(pixels[y * width:(y + 1) * width]) for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def squared(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="http://127.0.0.1:8080")
    ap.add_argument("--model", required=True)
    ap.add_argument("--examples", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", default="bench/raw")
    args = ap.parse_args()
    model = call(args.base + "/v1/models", open(args.model, "rb").read(), "application/octet-stream")
    mid = model["id"]
    url = f"{args.base}/v1/models/{mid}/continue"
    print(f"model {mid}: {model.get('sizes')}")
    print("example | mode | squared error per frame, 1..steps ahead | copy-last")
    for k in args.examples:
        for mode, extra in (("mean-field", {"mean_field": True}), ("sampled", {"seed": k})):
            body = {"example": k, "steps": args.steps, **extra}
            r = call(url, body)
            last = r["start"][-1]
            errors = [squared(f, t) for f, t in zip(r["frames"], r["truth"])]
            copy = [squared(last, t) for t in r["truth"]]
            print(f"{k} | {mode} | " + " ".join(f"{e:.1f}" for e in errors)
                  + " | " + " ".join(f"{e:.1f}" for e in copy))
            if mode == "sampled":
                # Rows: the given frames then the truth; the same start then the model's frames.
                side = r["shape"][0]
                strip = strip_png([r["start"] + r["truth"], r["start"] + r["frames"]], side)
                open(f"{args.out}/crbm-strip-{k}.png", "wb").write(strip)
            png = call(url, body, accept="image/png")
            name = f"{args.out}/crbm-continue-{k}-{mode}.png"
            open(name, "wb").write(png)
            print(f"  wrote {name} ({len(png)} bytes)")


if __name__ == "__main__":
    main()
