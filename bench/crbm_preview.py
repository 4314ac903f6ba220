"""Continuations of held-out moving-digit videos through the running server: imports a sequence
model, asks POST /v1/models/{id}/continue for each example (mean field and sampled), and
writes the animated PNGs and a table of squared errors per frame against what really came
next, with the copy-the-last-frame baseline.

  python3 bench/crbm_preview.py --base http://127.0.0.1:8080 \
      --model models/moving-mnist-crbm.safetensors --examples 0 1 2 --steps 8 --out bench/raw

Standard library only."""
import argparse
import json
import urllib.request


def call(url, body=None, ctype="application/json", accept="application/json"):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"content-type": ctype, "accept": accept})
    with urllib.request.urlopen(req) as r:
        raw = r.read()
    return raw if accept == "image/png" else json.loads(raw)


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
            png = call(url, body, accept="image/png")
            name = f"{args.out}/crbm-continue-{k}-{mode}.png"
            open(name, "wb").write(png)
            print(f"  wrote {name} ({len(png)} bytes)")


if __name__ == "__main__":
    main()
