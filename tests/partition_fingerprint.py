"""A client partition's fingerprint, computed alike in the test process and in a fresh one
(test_federated.py): kept apart from the test module so the fresh process imports only what
building the partitions needs."""

from __future__ import annotations

import hashlib
import json
import pickle
import sys

import torch

from fedadc.config.schema import RunConfig
from fedadc.federated.build import client_data, client_partitions


def partition_fingerprint(run: RunConfig) -> list[dict]:
    """Every client's partition as this process builds it: its rows of the training set,
    its size and a hash of its images and labels."""
    fingerprint = []
    for pid, rows in enumerate(client_partitions(run)):
        part = client_data(run, pid)
        images, targets = part.batch(torch.arange(len(part)))
        fingerprint.append(
            {
                "rows": rows.tolist(),
                "size": len(part),
                "images": hashlib.sha256(images.numpy().tobytes()).hexdigest(),
                "labels": hashlib.sha256(targets.numpy().tobytes()).hexdigest(),
            }
        )
    return fingerprint


if (
    __name__ == "__main__"
):  # the run config arrives pickled on stdin, the fingerprint leaves as JSON
    print(json.dumps(partition_fingerprint(pickle.load(sys.stdin.buffer))))
