"""The PCA baseline of Hinton & Salakhutdinov (2006) for the deep autoencoder: project the
MNIST test images onto the first k principal components of the training images (pixels in
[0, 1]) and report the mean over test images of the summed squared reconstruction error.

Usage: python3 bench/pca_baseline.py [MNIST_DIR] [k]
"""
import gzip
import struct
import sys

import numpy as np


def images(path):
    with gzip.open(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, path
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(n, rows * cols) / 255.0


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mnist"
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    train = images(f"{root}/train-images-idx3-ubyte.gz")
    test = images(f"{root}/t10k-images-idx3-ubyte.gz")
    mean = train.mean(axis=0)
    centred = train - mean
    cov = centred.T @ centred / len(train)
    values, vectors = np.linalg.eigh(cov)
    top = vectors[:, np.argsort(values)[::-1][:k]]
    recon = (test - mean) @ top @ top.T + mean
    error = ((test - recon) ** 2).sum(axis=1).mean()
    print(f"PCA with {k} components: mean squared reconstruction error {error:.3f} per test image")


if __name__ == "__main__":
    main()
