"""Seeded, NaN-free K-means for clustering a batch of activation vectors on every step.

ADC clusters the ``B`` (about 128) vectors of a batch into ``T`` groups on the client at
every training step, so the clustering has to be fast on the activations' device and must
never fail. We write our own instead of reusing what the authors used:

* ``kmeans_pytorch`` v0.3 (the authors' choice) draws its initial centres with NumPy's
  *global*, unseeded RNG, so runs are not reproducible; it can return empty clusters, whose
  mean is ``0 / 0 = NaN``; and it returns the assignment from the start of its last iteration
  together with the centroids updated from it, so labels and centroids lag by half a step.
* ``sklearn.cluster.KMeans`` is correct but runs on the CPU in NumPy: on a GPU every call
  costs a device-to-host round trip. It is kept here as a cross-check backend
  (``backend="sklearn"``) with the same guarantees as ours.

Guarantees of :func:`kmeans` (both backends): every one of the ``T`` clusters is non-empty,
no value is NaN, the returned centroids are exactly the means of the returned clusters, and
the result is a function of the input and the state of ``generator`` only.

The torch backend is k-means++ (greedy variant, as in scikit-learn: ``2 + ln T`` D^2-sampled
candidates per pick, keep the one that lowers the potential most) followed by Lloyd
iterations, on a centred copy of ``x`` rescaled into ``[-1, 1]`` (K-means is invariant to
both), so huge magnitudes cannot overflow the squared distances. The returned centroids are
the means of ``x`` itself, accumulated in float64. Per-cluster sums use a one-hot matmul
rather than ``index_add`` so that they are deterministic on CUDA as well. Empty clusters are
refilled after every assignment (sklearn's rule, restricted to donors that keep a member).

The sklearn backend fits ``x`` in float64 divided by an exact power of two (bit-for-bit the
same partition as on ``x``, without overflow), then goes through the same final assignment,
empty-cluster fix and mean computation as the torch backend.
"""

from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["BACKENDS", "KMeansResult", "kmeans"]

BACKENDS: tuple[str, ...] = ("torch", "sklearn")
_MAX_PAIRWISE_ROWS = 4096  # k-means++ precomputes an N x N distance matrix up to this N


@dataclass(frozen=True)
class KMeansResult:
    """Result of :func:`kmeans`."""

    labels: torch.Tensor
    """``(N,)`` int64 cluster index of each row, every value of ``[0, T)`` used at least once."""
    centroids: torch.Tensor
    """``(T, F)`` mean of each cluster's rows, in the dtype and on the device of ``x``."""
    n_iter: int
    """Number of Lloyd iterations run (before the final assignment)."""


def kmeans(
    x: torch.Tensor,
    num_clusters: int,
    *,
    generator: torch.Generator | None = None,
    max_iter: int = 50,
    tol: float = 1e-4,
    backend: str = "torch",
) -> KMeansResult:
    """Cluster the ``N`` rows of ``x`` (``N x F``, floating, finite) into ``num_clusters``.

    Args:
        x: ``(N, F)`` floating tensor, ``N >= 1``, ``F >= 1``, finite values.
        num_clusters: ``T`` in ``[1, N]``.
        generator: source of all randomness; ``None`` means a fresh one seeded with 0.
        max_iter: maximum number of Lloyd iterations, ``>= 1``.
        tol: stop when the summed squared centroid shift is ``<= tol`` times the mean
            per-feature variance of ``x`` (scikit-learn's convention), ``>= 0``.
        backend: ``"torch"`` (on ``x``'s device) or ``"sklearn"`` (CPU cross-check).

    Raises:
        ValueError: an argument is out of range; the message names it.
    """
    num_clusters = _validate(x, num_clusters, generator, max_iter, tol, backend)
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(0)
    if backend == "torch":
        return _kmeans_torch(x, num_clusters, generator, max_iter, float(tol))
    return _kmeans_sklearn(x, num_clusters, generator, max_iter, float(tol))


def _validate(
    x: object,
    num_clusters: object,
    generator: object,
    max_iter: object,
    tol: object,
    backend: object,
) -> int:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(
            f"x must be a 2-D tensor (N, F) with N >= 1 rows and F >= 1 features, "
            f"got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"x must have a floating-point dtype, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must contain only finite values (found NaN or inf)")
    n = x.shape[0]
    if isinstance(num_clusters, bool):
        raise ValueError(f"num_clusters must be an int in [1, N={n}], got {num_clusters!r}")
    try:
        t = operator.index(num_clusters)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            f"num_clusters must be an int in [1, N={n}], got {num_clusters!r}"
        ) from None
    if not 1 <= t <= n:
        raise ValueError(f"num_clusters must be in [1, N={n}], got {t}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if (
        isinstance(tol, bool)
        or not isinstance(tol, (int, float))
        or not math.isfinite(tol)
        or tol < 0
    ):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    return t


# --------------------------------------------------------------------------- shared helpers


def _normalise(
    x: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """Scaled copies of ``x`` that can neither overflow nor underflow the distance maths.

    Returns ``(xw, xs, s0, mean, s1)``: ``xs = x / s0`` in float64 with ``s0`` an exact power of
    two (so ``xs`` has the same geometry as ``x`` bit for bit, with ``max |xs|`` in ``[1, 2)``),
    and ``xw = (xs - mean) / s1`` in ``[-1, 1]``, in float32 (float64 for float64 input).
    """
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    xd = x.detach().to(torch.float64)
    amax = float(xd.abs().amax())
    s0 = math.ldexp(1.0, math.frexp(amax)[1] - 1) if amax > 0 else 1.0
    xs = xd / s0
    mean = xs.mean(dim=0)
    centred = xs - mean
    s1 = centred.abs().amax()
    s1 = torch.where(s1 > 0, s1, torch.ones_like(s1))
    return (centred / s1).to(work), xs, s0, mean, s1


def _sq_dist(xw: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``(N, T)`` squared Euclidean distances (expanded form, clamped at 0)."""
    d = (xw * xw).sum(1, keepdim=True) - 2.0 * (xw @ c.T) + (c * c).sum(1)
    return d.clamp_min_(0.0)


def _assign(xw: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid (first on ties) and the squared distance to it, per row."""
    dist, labels = _sq_dist(xw, c).min(dim=1)
    return labels, dist


def _fill_empty(labels: torch.Tensor, dist: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Relabel rows so that no cluster is empty, without a host sync.

    Equivalent to: for each empty cluster in increasing order, move into it the row farthest
    from its current centroid (``dist``; ties: lowest row index) among rows whose cluster has
    at least 2 members. Vectorised form: in each cluster the row that stays is the closest one
    (ties: highest index); all other rows are eligible; the ``E`` empty clusters take the ``E``
    eligible rows of largest ``dist``. There are ``N - nonempty >= T - nonempty = E`` of them.
    """
    n = labels.numel()
    counts = torch.bincount(labels, minlength=num_clusters)
    # Order rows by cluster, then by distance descending, then by index ascending.
    order = torch.argsort(dist, descending=True, stable=True)
    order = order[torch.argsort(labels[order], stable=True)]
    pos = torch.empty_like(order)
    pos[order] = torch.arange(n, device=labels.device)
    start = torch.cumsum(counts, 0) - counts
    rank = pos - start[labels]
    eligible = rank < counts[labels] - 1
    key = torch.where(eligible, dist, torch.full_like(dist, -math.inf))
    donors = torch.argsort(key, descending=True, stable=True)[:num_clusters]
    empty_first = torch.argsort((counts > 0).to(torch.int8), stable=True)
    move = torch.arange(num_clusters, device=labels.device) < (counts == 0).sum()
    out = labels.clone()
    out[donors] = torch.where(move, empty_first, labels[donors])
    return out


def _cluster_means(x: torch.Tensor, labels: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Per-cluster means in ``x``'s dtype (one-hot matmul: deterministic on CUDA too)."""
    onehot = F.one_hot(labels, num_clusters).to(x.dtype)
    counts = onehot.sum(0).clamp_min(1.0)
    return (onehot.T @ x) / counts[:, None]


def _finalise(
    x: torch.Tensor,
    xw: torch.Tensor,
    xs: torch.Tensor,
    s0: float,
    centroids_w: torch.Tensor,
    n_iter: int,
) -> KMeansResult:
    """Final assignment + empty-cluster fix + means of ``x`` (float64) over the labels."""
    t = centroids_w.shape[0]
    labels, dist = _assign(xw, centroids_w)
    labels = _fill_empty(labels, dist, t)
    centroids = (_cluster_means(xs, labels, t) * s0).to(x.dtype)
    return KMeansResult(labels=labels, centroids=centroids, n_iter=n_iter)


# --------------------------------------------------------------------------- torch backend


def _sample(weights: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` indices drawn with replacement proportionally to ``weights`` (on gen's device)."""
    idx = torch.multinomial(weights.to(generator.device), k, replacement=True, generator=generator)
    return idx.to(weights.device)


def _kmeans_pp(xw: torch.Tensor, num_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding; uniform over unchosen rows when every D^2 is zero."""
    n = xw.shape[0]
    n_trials = 2 + int(math.log(num_clusters))
    # Distances are computed directly (not expanded), so duplicate rows are exactly 0 apart.
    # Precompute all pairs once when the picks would otherwise compute more than N rows.
    pairwise = None
    if (num_clusters - 1) * n_trials > n and n <= _MAX_PAIRWISE_ROWS:
        pairwise = torch.cdist(xw, xw, compute_mode="donot_use_mm_for_euclid_dist").square_()

    def rows(idx: torch.Tensor) -> torch.Tensor:
        if pairwise is not None:
            return pairwise[idx]
        return (xw[None, :, :] - xw[idx][:, None, :]).pow(2).sum(2)

    first = _sample(torch.ones(n, dtype=xw.dtype, device=xw.device), 1, generator)
    centers = [first]
    chosen = torch.zeros(n, dtype=torch.bool, device=xw.device)
    chosen[first] = True
    closest = rows(first)[0].masked_fill_(chosen, 0.0)
    for _ in range(1, num_clusters):
        pot = closest.sum()
        weights = torch.where(pot > 0, closest, (~chosen).to(xw.dtype))
        cand = _sample(weights, n_trials, generator)
        d_cand = torch.minimum(rows(cand), closest)  # (trials, N)
        best = d_cand.sum(1).argmin()
        pick = cand[best].reshape(1)
        centers.append(pick)
        chosen[pick] = True
        closest = d_cand[best].masked_fill_(chosen, 0.0)
    return xw[torch.cat(centers)]


@torch.no_grad()
def _kmeans_torch(
    x: torch.Tensor, num_clusters: int, generator: torch.Generator, max_iter: int, tol: float
) -> KMeansResult:
    xw, xs, s0, _, _ = _normalise(x)
    tol_abs = tol * xw.var(dim=0, unbiased=False).mean()
    centroids = _kmeans_pp(xw, num_clusters, generator)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007  (n_iter is used after the loop)
        labels, dist = _assign(xw, centroids)
        labels = _fill_empty(labels, dist, num_clusters)
        new = _cluster_means(xw, labels, num_clusters)
        shift = (new - centroids).pow(2).sum()
        centroids = new
        if bool(shift <= tol_abs):
            break
    return _finalise(x, xw, xs, s0, centroids, n_iter)


# ------------------------------------------------------------------------- sklearn backend


def _kmeans_sklearn(
    x: torch.Tensor, num_clusters: int, generator: torch.Generator, max_iter: int, tol: float
) -> KMeansResult:
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
    km = KMeans(
        n_clusters=num_clusters,
        init="k-means++",
        n_init=1,
        max_iter=max_iter,
        tol=tol,
        random_state=seed,
    )
    with torch.no_grad():
        xw, xs, s0, mean, s1 = _normalise(x)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Number of distinct clusters", category=ConvergenceWarning
        )
        # x / s0 (exact power of two): same partition as on x, but squares cannot overflow.
        km.fit(xs.cpu().numpy())
    with torch.no_grad():
        centers = torch.from_numpy(km.cluster_centers_).to(device=x.device)
        centroids_w = ((centers - mean) / s1).to(xw.dtype)
        return _finalise(x, xw, xs, s0, centroids_w, int(km.n_iter_))
