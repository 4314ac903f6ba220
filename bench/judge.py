"""An independent judge of generated digits: a multilayer perceptron (784-800-10, ReLU),
trained here in numpy on the 60,000 MNIST training images, with nothing shared with the
models it judges. Its own error on the MNIST test set is printed as its credential.

Two uses, both through a running server:

  # generated digits: how many of the samples for each clamped label are judged as it
  python3 bench/judge.py dreams --base http://127.0.0.1:8080 --model default \
      --per-label 100 --steps 1000

  # sequence continuations: does the digit keep its identity in each generated frame?
  python3 bench/judge.py sequences --base http://127.0.0.1:8080 --model ID \
      --examples 200 --steps 12

`--model` is a model id or alias on the server, or a .safetensors file to import first.
The trained judge is cached (default ~/.cache/dbn-serve/judge-mlp.npz), keyed by its settings.
Needs numpy."""
import argparse
import gzip
import json
import os
import struct
import sys
import time
import urllib.request

import numpy as np

HIDDEN = 800
EPOCHS = 20
BATCH = 100
RATE = 0.05
MOMENTUM = 0.9
DECAY = 0.95
SEED = 7


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(directory):
    def find(stem):
        for name in (stem + ".gz", stem):
            path = os.path.join(directory, name)
            if os.path.exists(path):
                return path
        sys.exit(f"no {stem}(.gz) in {directory}")

    def images(stem):
        return read_idx(find(stem)).reshape(-1, 784).astype(np.float32) / 255.0

    def labels(stem):
        return read_idx(find(stem)).astype(np.int64)

    return (images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte"),
            images("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte"))


class Judge:
    def __init__(self, params):
        self.w1, self.b1, self.w2, self.b2 = params

    def logits(self, x):
        h = np.maximum(np.asarray(x, dtype=np.float32) @ self.w1 + self.b1, 0.0)
        return h @ self.w2 + self.b2

    def predict(self, x):
        return np.argmax(self.logits(x), axis=1)

    def error(self, x, y):
        return float(np.mean(self.predict(x) != y))


def train(xs, ys):
    """Plain minibatch SGD with momentum on the softmax cross-entropy."""
    rng = np.random.default_rng(SEED)
    w1 = (rng.standard_normal((784, HIDDEN)) * np.sqrt(2.0 / 784)).astype(np.float32)
    w2 = (rng.standard_normal((HIDDEN, 10)) * np.sqrt(2.0 / HIDDEN)).astype(np.float32)
    b1, b2 = np.zeros(HIDDEN, np.float32), np.zeros(10, np.float32)
    params = [w1, b1, w2, b2]
    velocity = [np.zeros_like(p) for p in params]
    onehot = np.eye(10, dtype=np.float32)[ys]
    rate = RATE
    for epoch in range(EPOCHS):
        start = time.time()
        order = rng.permutation(len(xs))
        for i in range(0, len(xs), BATCH):
            idx = order[i:i + BATCH]
            x, t = xs[idx], onehot[idx]
            a = x @ w1 + b1
            h = np.maximum(a, 0.0)
            z = h @ w2 + b2
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            dz = (p - t) / len(idx)
            dh = (dz @ w2.T) * (a > 0)
            grads = [x.T @ dh, dh.sum(axis=0), h.T @ dz, dz.sum(axis=0)]
            for p_, v, g in zip(params, velocity, grads):
                v *= MOMENTUM
                v -= rate * g
                p_ += v
        rate *= DECAY
        print(f"judge epoch {epoch + 1}/{EPOCHS}: {time.time() - start:.1f}s", file=sys.stderr)
    return params


def load_judge(mnist_dir, cache):
    """The cached judge if its settings match, else a freshly trained one; and the MNIST
    test labels."""
    key = f"{HIDDEN}-{EPOCHS}-{BATCH}-{RATE}-{MOMENTUM}-{DECAY}-{SEED}"
    xs, ys, xt, yt = load_mnist(mnist_dir)
    params = None
    if os.path.exists(cache):
        saved = np.load(cache)
        if str(saved["key"]) == key:
            params = [saved[n] for n in ("w1", "b1", "w2", "b2")]
    if params is None:
        params = train(xs, ys)
        os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
        tmp = cache + ".part.npz"
        np.savez(tmp, key=key, w1=params[0], b1=params[1], w2=params[2], b2=params[3])
        os.replace(tmp, cache)
    judge = Judge(params)
    print(f"judge=mlp-784-{HIDDEN}-10 settings={key} test_error={judge.error(xt, yt):.4f}")
    return judge, yt


def call(url, body=None, ctype="application/json"):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"content-type": ctype, "accept": "application/json"})
    with urllib.request.urlopen(req, timeout=3600) as r:
        return json.loads(r.read())


def model_id(base, model):
    if model.endswith(".safetensors"):
        with open(model, "rb") as f:
            return call(base + "/v1/models", f.read(), "application/octet-stream")["id"]
    return model


def centred(frame, side):
    """A frame of a moving digit as MNIST presents digits: the 28×28 window around the
    centre of mass of its ink (outside the canvas counts as blank)."""
    img = np.asarray(frame, dtype=np.float32).reshape(side, side)
    mass = img.sum()
    if mass <= 0:
        return np.zeros(784, np.float32)
    rows, cols = np.indices(img.shape)
    cy, cx = int(round((rows * img).sum() / mass)), int(round((cols * img).sum() / mass))
    pad = np.zeros((side + 28, side + 28), np.float32)
    pad[14:14 + side, 14:14 + side] = img
    return pad[cy:cy + 28, cx:cx + 28].reshape(784)


def dreams(args, judge):
    mid = model_id(args.base, args.model)
    total = 0
    fractions = []
    for label in range(10):
        body = {"label": label, "count": args.per_label, "gibbs_steps": args.steps, "seed": args.seed}
        r = call(f"{args.base}/v1/models/{mid}/samples", body)
        images = np.asarray(r["images"], dtype=np.float32)
        ok = int(np.sum(judge.predict(images) == label))
        total += ok
        fractions.append(ok / len(images))
        print(f"label={label} samples={len(images)} judged_as_label={ok / len(images):.3f}")
    n = 10 * args.per_label
    print(f"model={mid} steps={args.steps} samples={n} "
          f"fraction_judged_as_clamped_label={total / n:.4f}")
    print("| " + " | ".join(f"{round(100 * f)} %" for f in fractions) + f" | {100 * total / n:.1f} % |")


def sequences(args, judge, test_labels):
    """For held-out example k (made from MNIST test image k): the fraction of each
    continuation's frames, centred, that the judge reads as test image k's digit."""
    mid = model_id(args.base, args.model)
    url = f"{args.base}/v1/models/{mid}/continue"
    modes = ("truth", "copy-last", "mean-field", "sampled")
    hits = {m: [] for m in modes}
    for k in range(args.first, args.first + args.examples):
        ask = {"example": k, "steps": args.steps, "gibbs_steps": args.gibbs_steps}
        sampled = call(url, {**ask, "seed": k})
        mean = call(url, {**ask, "mean_field": True})
        side = sampled["shape"][0]
        frames = {
            "truth": sampled["truth"],
            "copy-last": [sampled["start"][-1]] * args.steps,
            "mean-field": mean["frames"],
            "sampled": sampled["frames"],
        }
        for m, fs in frames.items():
            judged = judge.predict(np.stack([centred(f, side) for f in fs]))
            row = np.full(args.steps, np.nan)
            row[:len(judged)] = judged == test_labels[k]
            hits[m].append(row)
    print(f"model={mid} examples={args.first}..{args.first + args.examples - 1} steps={args.steps} gibbs_steps={args.gibbs_steps} "
          f"(truth: the frames that really followed, as many as the video has)")
    print("frames | judged as the digit, all frames | at frame 1 | at frame 6 | at frame 12 |")
    for m in modes:
        h = np.array(hits[m])
        at = [np.nanmean(h[:, i]) if np.any(~np.isnan(h[:, i])) else float("nan")
              for i in (0, 5, args.steps - 1)]
        print(f"{m} | {np.nanmean(h):.3f} | " + " | ".join(f"{a:.3f}" for a in at) + " |")


def main():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--mnist-dir", default=os.environ.get("DBN_MNIST_DIR", "../shared/data/mnist"))
    common.add_argument("--cache", default=os.path.expanduser("~/.cache/dbn-serve/judge-mlp.npz"))
    common.add_argument("--base", default="http://127.0.0.1:8080")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    d = sub.add_parser("dreams", parents=[common])
    d.add_argument("--model", required=True)
    d.add_argument("--per-label", type=int, default=100)
    d.add_argument("--steps", type=int, default=1000)
    d.add_argument("--seed", type=int, default=2026)
    s = sub.add_parser("sequences", parents=[common])
    s.add_argument("--model", required=True)
    s.add_argument("--examples", type=int, default=200)
    s.add_argument("--steps", type=int, default=12)
    s.add_argument("--gibbs-steps", type=int, default=30)
    s.add_argument("--first", type=int, default=0, help="number of the first example")
    sub.add_parser("credential", parents=[common])
    args = ap.parse_args()
    judge, test_labels = load_judge(args.mnist_dir, args.cache)
    if args.what == "dreams":
        dreams(args, judge)
    elif args.what == "sequences":
        sequences(args, judge, test_labels)


if __name__ == "__main__":
    main()
