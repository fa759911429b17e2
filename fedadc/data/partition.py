"""Split a training set across clients with flwr-datasets' partitioners (seeded).

flwr-datasets is Flower's data library, not its runtime: it is pure data code and imports
no part of ``flwr``. Its partitioners need only the label column, so we hand them a
one-column ``datasets.Dataset`` and read back row indices.
"""

from __future__ import annotations

import torch

PARTITIONS = ("iid", "dirichlet", "pathological")


def partition_indices(
    labels: torch.Tensor,
    num_clients: int,
    *,
    kind: str = "iid",
    seed: int = 0,
    alpha: float = 0.5,
    min_partition_size: int = 2,
    classes_per_client: int = 2,
) -> list[torch.Tensor]:
    """Row indices of each client's partition."""
    from datasets import Dataset
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        PathologicalPartitioner,
    )

    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if num_clients > len(labels):
        raise ValueError(f"num_clients={num_clients} exceeds the {len(labels)} training samples")
    if kind == "iid":
        partitioner = IidPartitioner(num_partitions=num_clients)
    elif kind == "dirichlet":
        if alpha <= 0:
            raise ValueError(f"partition alpha must be > 0, got {alpha}")
        partitioner = DirichletPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            alpha=alpha,
            min_partition_size=min_partition_size,
            self_balancing=True,
            seed=seed,
        )
    elif kind == "pathological":
        partitioner = PathologicalPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            num_classes_per_partition=classes_per_client,
            class_assignment_mode="first-deterministic",
            seed=seed,
        )
    else:
        raise ValueError(f"partition kind must be one of {PARTITIONS}, got {kind!r}")
    partitioner.dataset = Dataset.from_dict(
        {"label": labels.tolist(), "row": list(range(len(labels)))}
    )
    return [
        torch.tensor(partitioner.load_partition(i)["row"], dtype=torch.long)
        for i in range(num_clients)
    ]
