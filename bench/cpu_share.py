"""Does inference starve training, or training inference? Measures, with a training job
running, three windows: training alone, training under classification load (bench/load.py),
training alone again. For each window: training throughput (examples/s, from the job's
progress), the CPU time of the server's training threads (named train-*) and of its other
threads (HTTP and inference), and the load generator's CPU. Standard library only.

  python3 bench/cpu_share.py --base http://127.0.0.1:8080 --server-pid PID --job JOB_ID \
      --model MODEL_ID [--seconds 60] [--clients 16] [--mode json]

The job must stay in one layer for all three windows (e.g. one wide layer, many epochs) and
is left running. The check of the issue: the drop in training throughput should not exceed
the share of the machine's CPU that inference took.
"""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count()


def stat_seconds(path, children=False):
    """utime + stime (and the waited-for children's, if asked) from a /proc stat file."""
    with open(path) as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def thread_cpu(pid):
    """CPU seconds of the training threads (train-*, alive for the whole job) and of the rest
    of the process. The rest is the process total minus training, since the blocking pool's
    threads come and go and an ended thread's time is only in the total."""
    train = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        path = f"/proc/{pid}/task/{tid}/stat"
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if not f.read().startswith("train"):
                    continue
            train += stat_seconds(path)
        except OSError:
            continue  # the thread ended
    return {"train": train, "serve": stat_seconds(f"/proc/{pid}/stat") - train}


def process_cpu(pid):
    return stat_seconds(f"/proc/{pid}/stat", children=True)


def examples_done(base, job):
    """Examples processed so far in the job's current layer, and that layer."""
    with urllib.request.urlopen(f"{base}/v1/jobs/{job}") as r:
        j = json.load(r)
    p = j["progress"]
    batch = j["spec"]["pretrain"].get("batch_size", 100)
    return ((p["epoch"] - 1) * p["batches"] + p["batch"]) * batch, (p["phase"], p["layer"])


def window(args, with_load):
    load = None
    if with_load:
        load = subprocess.Popen(
            [sys.executable, os.path.join(os.path.dirname(__file__), "load.py"),
             "--base", args.base, "--model", args.model, "--mode", args.mode,
             "--clients", str(args.clients), "--seconds", str(args.seconds),
             "--mnist-dir", args.mnist_dir],
            stdout=subprocess.PIPE, text=True)
        time.sleep(3)  # the generator reads MNIST first
    ex0, where0 = examples_done(args.base, args.job)
    cpu0, t0 = thread_cpu(args.server_pid), time.monotonic()
    gen0 = process_cpu(load.pid) if load else 0.0
    time.sleep(args.seconds - 6 if with_load else args.seconds)
    ex1, where1 = examples_done(args.base, args.job)
    cpu1, t1 = thread_cpu(args.server_pid), time.monotonic()
    gen1 = process_cpu(load.pid) if load else 0.0
    report = ""
    if load:
        report = load.communicate()[0]
    if where0 != where1:
        sys.exit(f"the job moved from {where0} to {where1}: use a job that stays in one layer")
    wall = t1 - t0
    machine = wall * CORES
    return {
        "examples_per_sec": (ex1 - ex0) / wall,
        "train_share": (cpu1["train"] - cpu0["train"]) / machine,
        "serve_share": (cpu1["serve"] - cpu0["serve"]) / machine,
        "generator_share": (gen1 - gen0) / machine,
        "load_report": report,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="http://127.0.0.1:8080")
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--job", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--mnist-dir", default="../shared/data/mnist")
    ap.add_argument("--mode", default="json")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()

    rows = []
    for name, loaded in [("training alone", False), ("training + load", True), ("training alone again", False)]:
        w = window(args, loaded)
        rows.append((name, w))
        print(
            f"{name:22s} {w['examples_per_sec']:8.0f} examples/s   CPU of the machine: training "
            f"{w['train_share']:5.1%}, serving {w['serve_share']:5.1%}, load generator "
            f"{w['generator_share']:5.1%}",
            flush=True,
        )
        if w["load_report"]:
            print("   " + w["load_report"].strip().replace("\n", "\n   "))
    idle = (rows[0][1]["examples_per_sec"] + rows[2][1]["examples_per_sec"]) / 2
    busy = rows[1][1]
    drop = 1 - busy["examples_per_sec"] / idle
    print(f"training throughput drop under load: {drop:.1%} (against the mean of the two quiet windows)")
    print(f"share of the machine's CPU taken by inference: {busy['serve_share']:.1%}; "
          f"by the load generator: {busy['generator_share']:.1%}; together {busy['serve_share'] + busy['generator_share']:.1%}")
    verdict = "within" if drop <= busy["serve_share"] else "MORE than"
    print(f"the drop is {verdict} inference's share")
    # The load generator runs on the same cores, which a real deployment's clients do not:
    # the share inference took of the CPU that the generator left to the server.
    of_server = busy["serve_share"] / (1 - busy["generator_share"])
    print(f"inference's share of the CPU left to the server: {of_server:.1%}")
    quiet = (rows[0][1]["train_share"] + rows[2][1]["train_share"]) / 2
    print(
        f"training examples per CPU-second of its threads: alone {idle / (quiet * CORES):.0f}, "
        f"under load {busy['examples_per_sec'] / (busy['train_share'] * CORES):.0f}"
    )


if __name__ == "__main__":
    main()
