"""Classifiers of the two training stages (Sec. 3.2 and 4.3) and their losses.

* Stage 1, :class:`GlobalLocalHead`: one linear classifier on g_L and one on P(x_L); the loss
  of Eq. (6) is the sum of their cross-entropies.
* Stage 2, :class:`CombinationClassifier`: the local and global combination classifier of
  Eq. (4)-(5), ``[mean_i phi(x_L^i), phi(g_L)]`` followed by a linear layer, trained with
  Eq. (7). phi is the Tensor Sketch projection of the bilinear kernel (:class:`TensorSketch`).
"""

from __future__ import annotations

import contextlib

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from lgdnet.models.layout import global_average

# an FX leaf here: it branches on the map's strides, which symbolic tracing cannot see
torch.fx.wrap("global_average")


class GlobalLocalHead(nn.Module):
    """Stage-1 head (Eq. 6): ``global_classifier(g_L)`` and ``local_classifier(P(x_L))``.

    The prediction (``forward``) is the mean of the two classifiers' logits; training uses
    both separately (:meth:`forward_parts`, the two terms of Eq. 6).

    Args:
        feature_dim: C_L, channels of x_L and g_L.
        num_classes: number of classes.
        dropout: dropout probability before both classifiers.

    Shape:
        ``local: (N, C_L, T', H', W'), global: (N, C_L)`` -> ``(N, num_classes)``;
        ``pre_logits=True``: ``(N, 2 C_L)``, ``[g_L, P(x_L)]`` after dropout.
    """

    def __init__(self, feature_dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.global_classifier = nn.Linear(feature_dim, num_classes)
        self.local_classifier = nn.Linear(feature_dim, num_classes)

    def forward_parts(self, local: torch.Tensor, global_: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"logits", "global_logits", "local_logits"}``: the prediction and both terms."""
        global_logits = self.global_classifier(self.dropout(global_))
        local_logits = self.local_classifier(self.dropout(global_average(local)))  # P(x_L)
        return {
            "logits": (global_logits + local_logits) / 2,
            "global_logits": global_logits,
            "local_logits": local_logits,
        }

    def forward(
        self, local: torch.Tensor, global_: torch.Tensor, pre_logits: bool = False
    ) -> torch.Tensor:
        if pre_logits:
            return torch.cat([self.dropout(global_), self.dropout(global_average(local))], 1)
        return self.forward_parts(local, global_)["logits"]


class _RealFFT(torch.autograd.Function):
    """``torch.fft.rfft`` over the last dimension, with a backward of one inverse real FFT.

    PyTorch's own backward of ``rfft`` pads the half spectrum and runs a full complex FFT. The
    adjoint of the real-to-half-spectrum transform of length n is ``n * irfft(G')``, where
    ``G'`` is the incoming gradient with its interior bins halved (the DC bin, and the Nyquist
    bin for even n, kept): half the work, and the largest part of the sketch head's backward.
    Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.n = x.shape[-1]
        return torch.fft.rfft(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n = ctx.n
        weight = torch.full((n // 2 + 1,), 0.5 * n, dtype=grad.real.dtype, device=grad.device)
        weight[0] = n
        if n % 2 == 0:
            weight[-1] = n
        return torch.fft.irfft(grad * weight, n=n)


@torch.fx.wrap
def rfft(x: torch.Tensor) -> torch.Tensor:
    """``torch.fft.rfft(x)`` over the last dimension, with the cheaper backward of
    :class:`_RealFFT` when a gradient is needed (and no compiler traces the call)."""
    if torch.is_grad_enabled() and x.requires_grad and not torch.compiler.is_compiling():
        return _RealFFT.apply(x)
    return torch.fft.rfft(x)


class TensorSketch(nn.Module):
    """Tensor Sketch phi of the degree-2 polynomial (bilinear) kernel (Pham & Pagh; Gao et al.).

    ``phi(v) = IFFT(FFT(CS1(v)) * FFT(CS2(v)))`` where each count sketch
    ``CS(v)[j] = sum_{i: h(i) = j} s(i) v_i`` uses a hash ``h: [0, C) -> [0, d)`` and signs
    ``s in {-1, +1}``. Then ``<phi(a), phi(b)>`` is an unbiased estimate of ``<a, b>^2``.
    The hashes and signs are drawn once from a generator seeded with ``seed`` and stored as
    persistent buffers, so they survive ``state_dict`` round trips and ``.to()``.

    Args:
        in_features: C, the size of the input vectors.
        sketch_dim: d, the size of the sketch.
        seed: seed of the hashes and signs.

    Shape:
        ``(..., C) -> (..., d)``.
    """

    def __init__(self, in_features: int, sketch_dim: int = 8192, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.in_features = in_features
        self.sketch_dim = sketch_dim
        for k in (1, 2):
            index = torch.randint(sketch_dim, (in_features,), generator=generator)
            sign = torch.randint(2, (in_features,), generator=generator) * 2 - 1
            self.register_buffer(f"hash{k}", index)
            self.register_buffer(f"sign{k}", sign.float())

    def count_sketch(self, v: torch.Tensor, k: int) -> torch.Tensor:
        """Count sketch ``CS_k(v)``: ``(..., C) -> (..., d)`` (a signed scatter-add)."""
        index, sign = getattr(self, f"hash{k}"), getattr(self, f"sign{k}")
        out = v.new_zeros(v.shape[:-1] + (self.sketch_dim,))
        return out.index_add(-1, index, v * sign.to(v.dtype))

    def spectrum(self, v: torch.Tensor) -> torch.Tensor:
        """``FFT(CS1(v)) * FFT(CS2(v))``: the sketch in the frequency domain, ``(..., d//2+1)``."""
        return rfft(self.count_sketch(v, 1)) * rfft(self.count_sketch(v, 2))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft(self.spectrum(v), n=self.sketch_dim)

    def pooled(self, v: torch.Tensor, dim: int) -> torch.Tensor:
        """``mean`` of phi over ``dim`` (Eq. 5), averaged in the frequency domain (phi's last
        step is linear), so one inverse FFT serves all the positions."""
        return torch.fft.irfft(self.spectrum(v).mean(dim), n=self.sketch_dim)


@torch.fx.wrap
def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or as it is when it is float32 or float64 already (a leaf for
    ``torch.fx``, which cannot branch on a traced dtype)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _autocast_off() -> contextlib.ExitStack:
    """Autocast switched off on the CPU and, where there is one, on CUDA: the devices are
    named, not read from a tensor, so tracing (FX, export) sees a plain region."""
    stack = contextlib.ExitStack()
    for device_type in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        stack.enter_context(torch.autocast(device_type, enabled=False))
    return stack


def signed_sqrt(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``sign(z) sqrt(|z|)``; ``eps`` bounds the gradient near zero."""
    return torch.sign(z) * torch.sqrt(z.abs() + eps)


class CombinationClassifier(nn.Module):
    """Stage-2 local and global combination classifier (Sec. 3.2, Eq. 4-5).

    ``phi({x_L, g_L}) = [1/N sum_i phi(x_L^i), phi(g_L)]`` over the N = T'H'W' positions,
    then a linear layer. By default each half is passed through a signed square root and L2
    normalisation, as in compact bilinear pooling (Gao et al.): the averaged local sketch and
    the global sketch have very different scales, and normalising each keeps both kernels of
    Eq. (4) in play. The sketch is computed in (at least) float32 with autocast off, since
    half-precision FFTs are inexact and restricted to power-of-two sizes.

    Args:
        feature_dim: C_L.
        num_classes: number of classes.
        sketch_dim: d of each Tensor Sketch (8192 by default; the output of phi is 2d).
        signed_sqrt: apply the signed square root to each half.
        l2_normalize: L2-normalise each half.
        dropout: dropout probability before the linear layer.
        seed: seed of the sketch hashes (the local and global sketches share one phi).

    Shape:
        ``local: (N, C_L, T', H', W'), global: (N, C_L)`` -> ``(N, num_classes)``;
        ``pre_logits=True``: ``(N, 2d)``, phi of Eq. (5) after dropout.
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        sketch_dim: int = 8192,
        signed_sqrt: bool = True,
        l2_normalize: bool = True,
        dropout: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.sketch = TensorSketch(feature_dim, sketch_dim, seed)
        self.use_signed_sqrt = signed_sqrt
        self.use_l2_normalize = l2_normalize
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * sketch_dim, num_classes)

    def features(self, local: torch.Tensor, global_: torch.Tensor) -> torch.Tensor:
        """phi({x_L, g_L}) of Eq. (5), ``(N, 2d)``."""
        with _autocast_off():
            positions = at_least_float32(local).flatten(2).transpose(1, 2)  # (N, T'H'W', C): x_L^i
            parts = [self.sketch.pooled(positions, dim=1), self.sketch(at_least_float32(global_))]
            if self.use_signed_sqrt:
                parts = [signed_sqrt(p) for p in parts]
            if self.use_l2_normalize:
                parts = [F.normalize(p, dim=-1) for p in parts]
            return torch.cat(parts, dim=-1)

    def forward(
        self, local: torch.Tensor, global_: torch.Tensor, pre_logits: bool = False
    ) -> torch.Tensor:
        features = self.dropout(self.features(local, global_).to(self.classifier.weight.dtype))
        return features if pre_logits else self.classifier(features)

    def forward_parts(self, local: torch.Tensor, global_: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"logits"}``: Eq. (7) has one term."""
        return {"logits": self.forward(local, global_)}


def stage_loss(
    outputs: dict[str, torch.Tensor], target: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """The training loss of either stage (Sec. 4.3).

    Stage 1 (outputs carry ``global_logits`` and ``local_logits``): Eq. (6), the *sum* of the
    cross-entropies of the global and the local classifier. Stage 2: Eq. (7), the
    cross-entropy of the combination classifier's ``logits``.

    Args:
        outputs: the dict returned by ``LGDNet.forward_parts`` (the head's
            ``forward_parts``).
        target: class indices ``(N,)`` (or class probabilities ``(N, K)``).
        label_smoothing: passed to ``F.cross_entropy``.
    """
    if "global_logits" in outputs:
        return F.cross_entropy(
            outputs["global_logits"], target, label_smoothing=label_smoothing
        ) + F.cross_entropy(outputs["local_logits"], target, label_smoothing=label_smoothing)
    return F.cross_entropy(outputs["logits"], target, label_smoothing=label_smoothing)
