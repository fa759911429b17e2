"""Payload: the named tensors of one message, and their exact byte encoding.

The encoding is safetensors (a well-kept, language-neutral format: an 8-byte header length,
a JSON header, then the raw little-endian buffers). We count bytes as ``len(to_bytes())``,
never as an estimate, and attribute them to kinds (activations, labels, ...) so the ledger
can say where the communication went; whatever is not a tensor buffer is ``header``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import safetensors.numpy
import torch

from fedadc.wire import precision
from fedadc.wire.precision import PAYLOAD_DTYPES, PrecisionError


class Kind(str, Enum):
    """What a tensor in a payload is, for the byte ledger."""

    ACTIVATIONS = "activations"
    GRADIENTS = "gradients"
    LABELS = "labels"
    INDICES = "indices"
    SCALES = "scales"
    WEIGHTS = "weights"
    HEADER = "header"


class PayloadError(ValueError):
    """A message could not be decoded or does not fit what the receiver expects."""


_HEADER_KEY = "fedadc"
_BATCH_KEY = "batch_size"


SOFT_LABEL_DTYPES = ("float32", "float16")
HARD_LABEL_DTYPES = ("int64", "int32", "int16")
_PRECISION_KINDS = ("activations", "gradients")


@dataclass(frozen=True)
class WireFormat:
    """Dtypes used on the wire for labels and, stacked on any method, for the float
    activations and gradients (:mod:`fedadc.wire.precision`).

    Soft labels (ADC's merged labels) may travel as float16 and hard labels as int16; the
    receiver casts them back to float32 / int64. Float activations / gradients may travel as
    float16, bfloat16 or int8 with a per-row scale; the receiver decodes them to float32.
    Training code never sees wire dtypes.
    """

    soft_label_dtype: str = "float32"
    hard_label_dtype: str = "int64"
    activation_dtype: str = "float32"
    gradient_dtype: str = "float32"

    @classmethod
    def from_config(cls, config: object) -> WireFormat:
        """The wire format of a run's ``wire`` config (:class:`fedadc.config.WireConfig`)."""
        return cls(**{f: getattr(config, f) for f in cls.__dataclass_fields__})

    def __post_init__(self) -> None:
        if self.soft_label_dtype not in SOFT_LABEL_DTYPES:
            raise ValueError(
                f"WireFormat.soft_label_dtype must be one of {list(SOFT_LABEL_DTYPES)}, "
                f"got {self.soft_label_dtype!r}"
            )
        if self.hard_label_dtype not in HARD_LABEL_DTYPES:
            raise ValueError(
                f"WireFormat.hard_label_dtype must be one of {list(HARD_LABEL_DTYPES)}, "
                f"got {self.hard_label_dtype!r}"
            )
        precision.check_dtype(self.activation_dtype, "WireFormat.activation_dtype")
        precision.check_dtype(self.gradient_dtype, "WireFormat.gradient_dtype")

    def precision_for(self, kind: Kind, array: np.ndarray) -> str:
        """How ``array`` of ``kind`` travels: the configured precision for float
        activations and gradients, ``float32`` (as is) for everything else."""
        if array.dtype.kind != "f" or kind.value not in _PRECISION_KINDS:
            return "float32"
        return self.activation_dtype if kind is Kind.ACTIVATIONS else self.gradient_dtype

    def wire_dtype(self, kind: Kind, array: np.ndarray) -> np.dtype:
        if kind is Kind.LABELS and array.dtype.kind == "f":
            return np.dtype(self.soft_label_dtype)
        if kind is Kind.LABELS and array.dtype.kind in "iu":
            return np.dtype(self.hard_label_dtype)
        return array.dtype


@dataclass
class Payload:
    """Named tensors of one message, each tagged with a :class:`Kind`, plus small metadata.

    Tensors are detached CPU copies: a payload is what the other side receives, never a
    piece of the sender's autograd graph.
    """

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    kinds: dict[str, Kind] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    batch_size: int | None = None
    """The client batch B behind the payload, for methods whose tensors do not show it
    (ADC sends T merged samples, C3-SL G superpositions, quantization packed codes)."""
    wire: WireFormat = field(default_factory=WireFormat)
    """How :meth:`to_bytes` encodes labels: set by the encoder from the run's wire config,
    so the bytes counted are the bytes sent."""

    def add(self, name: str, tensor: torch.Tensor, kind: Kind) -> Payload:
        self.tensors[name] = tensor.detach().cpu()
        self.kinds[name] = Kind(kind)
        return self

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise PayloadError(
                f"payload has no tensor {name!r} (it has {sorted(self.tensors)}); "
                "sender and receiver probably use different methods or versions"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def to_bytes(self, wire: WireFormat | None = None) -> bytes:
        """The safetensors bytes, in ``wire`` or else the payload's own :attr:`wire`."""
        wire = wire or self.wire
        if _BATCH_KEY in self.meta:
            raise ValueError(f"set Payload.batch_size, not meta[{_BATCH_KEY!r}]")
        arrays: dict[str, np.ndarray] = {}
        dtypes: dict[str, str] = {}
        kinds = {k: v.value for k, v in self.kinds.items()}
        lossy: dict[str, str] = {}
        for name, tensor in self.tensors.items():
            array = tensor.numpy()
            codec = wire.precision_for(self.kinds[name], array)
            if codec != "float32":
                encoded = precision.encode(name, array, codec)
                if clash := sorted(set(encoded) & (set(self.tensors) - {name})):
                    raise ValueError(f"tensor name(s) {clash} are reserved for {name}'s scale")
                arrays.update(encoded)
                kinds.update({part: kinds[name] for part in encoded})
                lossy[name] = codec
                continue
            target = wire.wire_dtype(self.kinds[name], array)
            if target != array.dtype:  # the receiver casts back to the sender's dtype
                dtypes[name] = str(array.dtype)
            arrays[name] = np.ascontiguousarray(array.astype(target, copy=False))
        # One metadata entry holding sorted JSON: safetensors writes its metadata map in
        # hash order, and identical payloads must be identical bytes.
        meta = {k: str(v) for k, v in self.meta.items()}
        if self.batch_size is not None:
            meta[_BATCH_KEY] = str(self.batch_size)
        header = {"kinds": kinds, "dtypes": dtypes, "meta": meta}
        if lossy:  # only then: float32 payloads keep their bytes
            header["precision"] = lossy
        return safetensors.numpy.save(
            arrays, metadata={_HEADER_KEY: json.dumps(header, sort_keys=True)}
        )

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Payload:
        data = bytes(data)
        header = _read_header(data)
        try:
            ours = json.loads(header["__metadata__"][_HEADER_KEY])
            kinds = {k: Kind(v) for k, v in ours["kinds"].items()}
            dtypes = dict(ours["dtypes"])
            meta = {str(k): str(v) for k, v in ours["meta"].items()}
            lossy = {str(k): str(v) for k, v in ours.get("precision", {}).items()}
            arrays = safetensors.numpy.load(data)
        except Exception as err:
            raise PayloadError(f"malformed payload ({type(err).__name__}: {err})") from err
        if set(kinds) != set(arrays) or not set(dtypes) | set(lossy) <= set(arrays):
            raise PayloadError("malformed payload: tensor names and kind tags disagree")
        payload = cls(meta=meta, batch_size=_parse_batch_size(meta.pop(_BATCH_KEY, None)))
        for name, codec in lossy.items():
            arrays[name] = _decode_precision(name, codec, arrays, kinds)
            if codec == "int8":
                del arrays[precision.scale_name(name)]
        for name, array in arrays.items():
            restored = array.astype(np.dtype(dtypes.get(name, array.dtype)), copy=False)
            payload.tensors[name] = torch.from_numpy(np.array(restored))
            payload.kinds[name] = kinds[name]
        return payload


def _decode_precision(
    name: str, codec: str, arrays: dict[str, np.ndarray], kinds: dict[str, Kind]
) -> np.ndarray:
    """float32 values of ``name`` sent in precision ``codec``, or a clear PayloadError."""
    if kinds[name].value not in _PRECISION_KINDS:
        raise PayloadError(
            f"malformed payload: {name!r} of kind {kinds[name].value} has precision {codec!r}; "
            f"only {list(_PRECISION_KINDS)} travel in {list(PAYLOAD_DTYPES)}"
        )
    scale = precision.scale_name(name)
    if codec == "int8" and scale in kinds and kinds[scale] is not kinds[name]:
        raise PayloadError(f"malformed payload: scale {scale!r} must have the kind of {name!r}")
    try:
        return precision.decode(name, arrays, codec)
    except PrecisionError as err:
        raise PayloadError(f"malformed payload: {err}") from None


def bytes_by_kind(data: bytes) -> dict[str, int]:
    """Split serialized payload bytes by kind, from their own header: each tensor's buffer
    size as written (whatever wire format wrote it); the rest (``header``) is framing."""
    header = _read_header(data)
    try:
        kinds = json.loads(header["__metadata__"][_HEADER_KEY])["kinds"]
        sizes: dict[str, int] = {}
        for name, info in header.items():
            if name != "__metadata__":
                begin, end = info["data_offsets"]
                sizes[kinds[name]] = sizes.get(kinds[name], 0) + int(end) - int(begin)
    except (KeyError, TypeError, ValueError) as err:
        raise PayloadError(f"malformed payload ({type(err).__name__}: {err})") from err
    sizes[Kind.HEADER.value] = len(data) - sum(sizes.values())
    return sizes


def _parse_batch_size(value: str | None) -> int | None:
    """The one parser of the typed batch size: a positive integer, or absent."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise PayloadError(f"malformed payload: batch_size {value!r} is not a positive integer")
    return int(value)


def _read_header(data: bytes) -> dict:
    if len(data) < 8:
        raise PayloadError(f"malformed payload: {len(data)} bytes is shorter than a header")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise PayloadError(
            f"malformed payload: header claims {length} bytes but only {len(data) - 8} follow"
        )
    try:
        return json.loads(data[8 : 8 + length])
    except ValueError as err:
        raise PayloadError(f"malformed payload: header is not JSON ({err})") from err
