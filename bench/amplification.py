#!/usr/bin/env python3
"""Requests that cost the server far more than they cost the sender, measured against a
dbn-serve binary started here (default settings, the bundled model, a fresh data directory):

  upload   a gzipped IDX upload of 1.1 million blank 28x28 images (under 1 MB sent,
           862 MB unpacked): status, seconds, the server's peak resident memory (VmHWM).
  bombs    a multipart classify body of N 1-bit 4096x4096 PNGs (about 2 KB each):
           status, seconds, the server's CPU-seconds until it is idle again.
  deadline samples.png?count=400&gibbs_steps=S (default 1,200) with a 5 s client deadline:
           seconds from the client leaving until the server's CPU is idle.
  sigterm  SIGTERM while a long sampling call computes: seconds until the process exits.

Usage: bench/amplification.py BINARY [--cases upload,bombs,deadline,sigterm] [--bombs N]
                                     [--deadline-steps S]
Only the standard library; Linux (/proc).
"""

import argparse
import gzip
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

TICK = os.sysconf("SC_CLK_TCK")


def start(binary, data_dir):
    env = dict(os.environ, DBN_LOG="warn")
    proc = subprocess.Popen(
        [binary, "serve", "--addr", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE,
        env=env,
    )
    line = proc.stdout.readline().decode().strip()
    prefix = "dbn-serve listening on http://"
    if not line.startswith(prefix):
        proc.kill()
        raise SystemExit(f"unexpected first line: {line!r}")
    host, port = line[len(prefix):].rsplit(":", 1)
    return proc, (host, int(port))


def status_field(pid, name):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise KeyError(name)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_idle(pid, quiet=1.0, limit=600):
    """Seconds until the process used under 5 % of a core for `quiet` seconds."""
    started = time.time()
    last = cpu_seconds(pid)
    while time.time() - started < limit:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now - last < 0.05 * quiet:
            return time.time() - started - quiet
        last = now
    return float("inf")


def request(addr, method, path, body=None, headers=None, timeout=600):
    conn = http.client.HTTPConnection(*addr, timeout=timeout)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def multipart(parts):
    boundary = "dbnbench" + os.urandom(8).hex()
    out = bytearray()
    for name, data, ctype in parts:
        out += f"--{boundary}\r\n".encode()
        out += f'Content-Disposition: form-data; name="{name}"; filename="{name}"\r\n'.encode()
        out += f"Content-Type: {ctype}\r\n\r\n".encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def idx_upload(n):
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28)
    images = gzip.compress(header + bytes(n * 784), compresslevel=9)
    labels = gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, n) + bytes([7]) * n, compresslevel=9)
    return images, labels


def one_bit_png(side):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" + bytes((side + 7) // 8)
    raw = row * side
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def case_upload(binary):
    images, labels = idx_upload(1_100_000)
    with tempfile.TemporaryDirectory() as d:
        proc, addr = start(binary, d)
        try:
            base = status_field(proc.pid, "VmHWM")
            body, headers = multipart([("train_images", images, "application/octet-stream"),
                                       ("train_labels", labels, "application/octet-stream")])
            t = time.time()
            status, _ = request(addr, "POST", "/v1/datasets?name=blank", body, headers)
            took = time.time() - t
            peak = status_field(proc.pid, "VmHWM")
        finally:
            proc.kill()
            proc.wait()
    return {"case": "upload 1.1M blank images", "sent_bytes": len(body), "status": status,
            "seconds": round(took, 2), "peak_rss_mb_before": base // 1024,
            "peak_rss_mb": peak // 1024, "unpacked_mb": 1_100_000 * 784 // 2**20}


def case_bombs(binary, count):
    png = one_bit_png(4096)
    with tempfile.TemporaryDirectory() as d:
        proc, addr = start(binary, d)
        try:
            body, headers = multipart([(f"image{i}", png, "image/png") for i in range(count)])
            cpu0 = cpu_seconds(proc.pid)
            t = time.time()
            status, data = request(addr, "POST", "/v1/models/default/classify", body, headers)
            took = time.time() - t
            idle = wait_idle(proc.pid)
            cpu = cpu_seconds(proc.pid) - cpu0
        finally:
            proc.kill()
            proc.wait()
    code = ""
    try:
        code = json.loads(data)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        pass
    return {"case": f"classify {count} 1-bit 4096x4096 PNGs", "png_bytes": len(png),
            "sent_bytes": len(body), "status": status, "code": code, "seconds": round(took, 2),
            "server_cpu_seconds": round(cpu, 1), "busy_after_answer_s": round(max(idle, 0), 1)}


def case_deadline(binary, steps):
    with tempfile.TemporaryDirectory() as d:
        proc, addr = start(binary, d)
        try:
            sock = socket.create_connection(addr)
            sock.sendall(f"GET /v1/models/default/samples.png?count=400&gibbs_steps={steps} HTTP/1.1\r\n"
                         "Host: x\r\n\r\n".encode())
            sock.settimeout(5)
            answered = None
            try:
                answered = sock.recv(64).split(b"\r\n")[0].decode()
            except socket.timeout:
                pass
            sock.close()
            left = time.time()
            idle = wait_idle(proc.pid, quiet=0.5)
            busy = time.time() - left - 0.5 if idle != float("inf") else idle
        finally:
            proc.kill()
            proc.wait()
    return {"case": f"samples.png 400 x {steps} steps, client leaves after 5 s",
            "answer_within_5s": answered, "busy_after_client_left_s": round(max(busy, 0), 1)}


def case_sigterm(binary):
    with tempfile.TemporaryDirectory() as d:
        proc, addr = start(binary, d)
        sock = socket.create_connection(addr)
        sock.sendall(b"GET /v1/models/default/samples.png?count=400&gibbs_steps=1000 HTTP/1.1\r\n"
                     b"Host: x\r\n\r\n")
        time.sleep(2)
        t = time.time()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
            took = time.time() - t
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            took = float("inf")
        sock.close()
    return {"case": "SIGTERM during a long samples call (grace 20 s)",
            "seconds_to_exit": round(took, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--cases", default="upload,bombs,deadline,sigterm")
    ap.add_argument("--bombs", type=int, default=10_000)
    # 1,200 steps of 400 chains: within the default work budget, about 10 s of computing.
    ap.add_argument("--deadline-steps", type=int, default=1200)
    args = ap.parse_args()
    for case in args.cases.split(","):
        if case == "upload":
            result = case_upload(args.binary)
        elif case == "bombs":
            result = case_bombs(args.binary, args.bombs)
        elif case == "deadline":
            result = case_deadline(args.binary, args.deadline_steps)
        elif case == "sigterm":
            result = case_sigterm(args.binary)
        else:
            raise SystemExit(f"unknown case {case}")
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
