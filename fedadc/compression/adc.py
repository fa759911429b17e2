"""ADC, Attention-based Double Compression (Alvetreti et al., arXiv 2509.15058).

Per training step on the client:

1. cluster the batch into T groups by a per-sample feature (default: the CLS attention row
   of the last client block) with seeded K-means;
2. merge each group into one sample: mean activation, mean one-hot label (soft label);
3. keep, per merged sample, the prefix tokens (CLS) and the k - 1 patch tokens with the
   highest mean attention of the group's members.

The server receives T x k x d activations and T x C soft labels and returns a T x k x d
gradient: the backward pass is compressed for free. Fixes relative to the authors' code
(see the project's paper notes, section 7): seeded K-means that never leaves a cluster
empty (no NaN); token selection always by attention, whatever the clustering feature
(their ``cls``/``average`` options ranked embedding dimensions as tokens).
"""

from __future__ import annotations

import torch

from fedadc.compression import adc_math
from fedadc.compression.base import Compressor, Encoded, Plan
from fedadc.compression.kmeans import BACKENDS as KMEANS_BACKENDS
from fedadc.compression.kmeans import kmeans
from fedadc.compression.registry import register_compressor
from fedadc.compression.topk import check_ratio
from fedadc.model.spec import TokenSpec
from fedadc.wire.payload import Kind, Payload, PayloadError, WireFormat

MODES = ("double", "merge_only", "tokens_only")
FEATURES = ("attention", "cls", "mean")
CLUSTERINGS = ("all", "within_class")
WEIGHTINGS = ("uniform", "size")


@register_compressor("adc")
class ADC(Compressor):
    """Merge similar samples, then keep the most-attended tokens of each merged sample.

    Args:
        spec: the split's token spec.
        xi: target compression ratio (T/B)(k/n) in (0, 1].
        split_rule: how xi is divided between batch and tokens: ``sqrt`` (paper text) or
            ``authors_code`` (xi^(1/5) batch, xi^(4/5) tokens: the published runs).
        batch_ratio, token_ratio: explicit T/B and k/n; given together they replace xi.
        mode: ``double`` (ADC), ``merge_only`` (T/B = xi, all tokens) or ``tokens_only``
            (no merging, k/n = xi, hard labels).
        feature: clustering feature: ``attention`` (CLS attention row), ``cls`` (CLS token)
            or ``mean`` (mean token). Token selection always uses attention.
        kmeans_backend, kmeans_iters, kmeans_tol: K-means settings (paper: 50 iterations).
    """

    ratio_params = {"xi": "xi", "batch_ratio": "tb", "token_ratio": "kn"}  # noqa: RUF012

    def __init__(
        self,
        spec: TokenSpec,
        xi: float | None = None,
        split_rule: str = "sqrt",
        batch_ratio: float | None = None,
        token_ratio: float | None = None,
        mode: str = "double",
        feature: str = "attention",
        kmeans_backend: str = "torch",
        kmeans_iters: int = 50,
        kmeans_tol: float = 1e-4,
        cluster: str = "all",
        weighting: str = "uniform",
    ) -> None:
        super().__init__(spec)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if feature not in FEATURES:
            raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if weighting == "size" and mode == "tokens_only":
            raise ValueError("weighting='size' weighs merged samples; tokens_only merges none")
        if cluster not in CLUSTERINGS:
            raise ValueError(f"cluster must be one of {CLUSTERINGS}, got {cluster!r}")
        if kmeans_backend not in KMEANS_BACKENDS:
            raise ValueError(
                f"kmeans_backend must be one of {KMEANS_BACKENDS}, got {kmeans_backend!r}"
            )
        self.batch_ratio, self.token_ratio = _resolve_ratios(
            xi, split_rule, batch_ratio, token_ratio, mode
        )
        self.xi = self.batch_ratio * self.token_ratio
        self.mode = mode
        self.feature = feature
        self.merges_samples = mode != "tokens_only"
        self.kmeans_backend = kmeans_backend
        self.kmeans_iters = kmeans_iters
        self.kmeans_tol = kmeans_tol
        self.cluster = cluster
        self.weighting = weighting

    def nominal_xi(self, batch_size: int) -> float:
        return self.xi

    def sizes(self, batch_size: int) -> tuple[int, int]:
        """(T, k) for a batch of ``batch_size``."""
        spec = self.spec
        t = (
            adc_math.num_clusters(self.batch_ratio, batch_size)
            if self.merges_samples
            else batch_size
        )
        k = adc_math.num_kept_tokens(self.token_ratio, spec.num_tokens, spec.num_prefix_tokens)
        return t, k

    @torch.no_grad()
    def make_plan(
        self,
        tokens: torch.Tensor,
        cls_attention: torch.Tensor | None,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> Plan:
        batch = tokens.shape[0]
        if self.merges_samples and batch < 2:
            raise ValueError(
                f"ADC merges samples and needs a batch of at least 2, got batch_size={batch}"
            )
        if cls_attention is None:
            raise ValueError(
                "ADC needs the CLS attention row of the last client block; the model has no "
                "class token (class_token=False) - use a model with a CLS token"
            )
        if cls_attention.shape != tokens.shape[:2]:
            raise ValueError(
                f"cls_attention must be B x n = {tuple(tokens.shape[:2])}, "
                f"got {tuple(cls_attention.shape)}"
            )
        num_groups, k = self.sizes(batch)
        if self.merges_samples:
            feature = {
                "attention": cls_attention,
                "cls": tokens[:, 0],
                "mean": tokens.mean(dim=1),
            }[self.feature].float()
            if self.cluster == "within_class":
                feature = adc_math.with_class_separation(feature, labels, self.spec.num_classes)
            assignments = kmeans(
                feature,
                num_groups,
                generator=generator,
                max_iter=self.kmeans_iters,
                tol=self.kmeans_tol,
                backend=self.kmeans_backend,
            ).labels
        else:
            assignments = torch.arange(batch, device=tokens.device)
        group_attention = adc_math.merge_mean(cls_attention.float(), assignments, num_groups)
        kept = adc_math.top_tokens(group_attention, k, self.spec.num_prefix_tokens)
        return {"assignments": assignments, "kept_tokens": kept}

    def encode(self, tokens: torch.Tensor, labels: torch.Tensor, plan: Plan) -> Encoded:
        self.check_batch(tokens, labels)
        assignments, kept = plan["assignments"], plan["kept_tokens"]
        num_groups = kept.shape[0]
        if self.merges_samples:
            merged = adc_math.merge_mean(tokens, assignments, num_groups)
            targets = adc_math.soft_labels(labels, assignments, num_groups, self.spec.num_classes)
        else:
            merged, targets = tokens, labels
        sent = adc_math.gather_tokens(merged, kept)
        payload = Payload(batch_size=int(tokens.shape[0]))
        payload.add("activations", sent, Kind.ACTIVATIONS)
        payload.add("labels", targets, Kind.LABELS)
        if self.weighting == "size":
            sizes = adc_math.cluster_sizes(assignments, num_groups)
            payload.add("sizes", sizes.to(torch.int16), Kind.INDICES)
        return Encoded(payload=payload, sent=sent)

    def eval_forward(
        self,
        tokens: torch.Tensor,
        cls_attention: torch.Tensor | None = None,
        wire: WireFormat | None = None,
    ) -> torch.Tensor:
        """ADC's inference through the split path: a test sample travels alone, so nothing
        is merged (T = B, each sample its own cluster), and each sample keeps its own k
        most-attended tokens (CLS first), k as in training (:meth:`sizes`; ``merge_only``
        keeps every token). Predictions stay per sample, whatever the batch."""
        if cls_attention is None or cls_attention.shape != tokens.shape[:2]:
            raise ValueError(
                "ADC's inference keeps each sample's most-attended tokens and needs its CLS "
                f"attention row, B x n = {tuple(tokens.shape[:2])}; got "
                f"{None if cls_attention is None else tuple(cls_attention.shape)}"
            )
        spec = self.spec
        k = adc_math.num_kept_tokens(self.token_ratio, spec.num_tokens, spec.num_prefix_tokens)
        kept = adc_math.top_tokens(cls_attention.float(), k, spec.num_prefix_tokens)
        payload = Payload(batch_size=int(tokens.shape[0]))
        payload.add("activations", adc_math.gather_tokens(tokens, kept), Kind.ACTIVATIONS)
        labels = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        payload.add("labels", labels, Kind.LABELS)
        return self.eval_decode(payload, tokens.device, wire)

    def expected_tensors(self) -> dict[str, str]:
        expected = super().expected_tensors()
        if self.weighting == "size":
            expected["sizes"] = "int"
        return expected

    def loss_fields(self) -> tuple[str, ...]:
        return ("labels", "sizes") if self.weighting == "size" else ("labels",)

    def loss_targets(
        self, fields: Payload, rows: int, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As the base, plus the merged samples' sizes as loss weights (``weighting='size'``):
        the weighted mean of the merged losses estimates the loss of the whole batch."""
        targets, _ = super().loss_targets(fields, rows, device)
        if self.weighting != "size":
            return targets, None
        sizes = fields["sizes"]
        if sizes.shape != (rows,) or bool((sizes < 1).any()):
            raise PayloadError(
                f"ADC sizes must be {rows} cluster sizes >= 1, one per merged sample, "
                f"got shape {tuple(sizes.shape)}"
            )
        return targets, sizes.to(device=targets.device, dtype=torch.float32)


def _resolve_ratios(
    xi: float | None,
    split_rule: str,
    batch_ratio: float | None,
    token_ratio: float | None,
    mode: str,
) -> tuple[float, float]:
    explicit = batch_ratio is not None or token_ratio is not None
    if explicit:
        if batch_ratio is None or token_ratio is None or xi is not None:
            raise ValueError("give either xi, or both batch_ratio and token_ratio (not a mix)")
        check_ratio(batch_ratio, "batch_ratio")
        check_ratio(token_ratio, "token_ratio")
        return batch_ratio, token_ratio
    if xi is None:
        raise ValueError("ADC needs xi (e.g. xi=0.1) or both batch_ratio and token_ratio")
    check_ratio(xi, "xi")
    if mode == "merge_only":
        return xi, 1.0
    if mode == "tokens_only":
        return 1.0, xi
    return adc_math.ratios_from_xi(xi, split_rule)
