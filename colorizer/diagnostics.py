"""What a person debugging a GAN looks at, per layer, every `tracking.diagnostics_every` steps.

For each layer with weights (convolutions, by module name, e.g. `G.encoder.3.1`):
- histograms of its weights and of their gradients, and the gradient norm (a slope of norms from the last
  layer to the first is vanishing or exploding gradients);
- the update-to-weight ratio `||w_after - w_before|| / ||w_before||` of the optimizer step (about 1e-3 is
  healthy; far below, the layer barely learns; far above, it is thrashing);
For each activation (ReLU / LeakyReLU, named by module):
- a histogram of its input, the pre-activation values;
- the share of dead units: channels whose pre-activation is never positive anywhere in the batch (for a
  ReLU they pass no gradient at all; for a LeakyReLU they only pass the leak).
And histograms of D's scores on real and fake pairs.

Nothing is hooked or copied on ordinary steps: the probes attach for one step and detach, so the cost
when off is zero and the cost on a diagnostic step is a few tensor reductions (see BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

HEALTHY_UPDATE_RATIO = 1e-3
RATIO_LOW, RATIO_HIGH = 1e-5, 1e-1  # two orders of magnitude either side of healthy


@dataclass
class Histogram:
    """Counts over equal-width bins between `low` and `high` (plain values: JSON and wandb friendly)."""

    counts: list[int]
    low: float
    high: float

    @classmethod
    def of(cls, x: torch.Tensor, bins: int) -> Histogram:
        x = x.detach().float().flatten()
        x = x[torch.isfinite(x)]
        if x.numel() == 0:
            return cls([0] * bins, 0.0, 0.0)
        lo, hi = float(x.min()), float(x.max())
        if hi <= lo:
            hi = lo + 1e-8
        counts = torch.histc(x.cpu(), bins=bins, min=lo, max=hi)
        return cls([int(c) for c in counts.tolist()], lo, hi)

    def edges(self) -> list[float]:
        n = len(self.counts)
        return [self.low + (self.high - self.low) * i / n for i in range(n + 1)]

    def to_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "low": self.low, "high": self.high}


def weighted_layers(model: nn.Module, prefix: str) -> dict[str, nn.Parameter]:
    """`{f"{prefix}.{module name}": weight}` for every module with a weight of 2+ dims (convs, linears).

    Spectral-norm parametrized convs are reported by their original (trainable) weight.
    """
    out = {}
    for name, module in model.named_modules():
        params = dict(module.named_parameters(recurse=False))
        w = params.get("weight")
        if w is None and hasattr(module, "parametrizations") and "weight" in module.parametrizations:
            w = module.parametrizations.weight.original
        if w is not None and w.ndim >= 2:
            out[f"{prefix}.{name}"] = w
    return out


def dead_share(pre_activation: torch.Tensor) -> float:
    """Share of channels of `(B, C, ...)` whose values are never > 0 in the batch."""
    x = pre_activation.detach()
    per_channel_max = x.transpose(0, 1).reshape(x.shape[1], -1).amax(1)
    return float((per_channel_max <= 0).float().mean())


@dataclass
class StepProbe:
    """Attach to G and D for one training step; collects everything above; `detach()` when done."""

    models: dict[str, nn.Module]
    bins: int = 32
    activations: dict[str, Histogram] = field(default_factory=dict)
    dead: dict[str, float] = field(default_factory=dict)
    weights: dict[str, Histogram] = field(default_factory=dict)
    grads: dict[str, Histogram] = field(default_factory=dict)
    grad_norms: dict[str, float] = field(default_factory=dict)
    update_ratios: dict[str, float] = field(default_factory=dict)
    scores: dict[str, Histogram] = field(default_factory=dict)
    _handles: list[Any] = field(default_factory=list)
    _before: dict[str, torch.Tensor] = field(default_factory=dict)

    def attach(self) -> StepProbe:
        for prefix, model in self.models.items():
            for name, module in model.named_modules():
                if isinstance(module, nn.ReLU | nn.LeakyReLU):
                    self._handles.append(module.register_forward_hook(self._hook(f"{prefix}.{name}")))
        return self

    def _hook(self, key: str):
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            x = inputs[0]
            if key in self.activations:  # D runs twice (real, fake) and once more for G: keep the first
                return
            self.activations[key] = Histogram.of(x, self.bins)
            self.dead[key] = dead_share(x)

        return hook

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def record_grads(self, prefix: str) -> None:
        """Call after backward (and unscaling), before clipping and the optimizer step."""
        for key, w in weighted_layers(self.models[prefix], prefix).items():
            if w.grad is None:
                continue
            self.grads[key] = Histogram.of(w.grad, self.bins)
            self.grad_norms[key] = float(w.grad.detach().float().norm())
            self._before[key] = w.detach().clone()

    def record_update(self, prefix: str) -> None:
        """Call after the optimizer step: update-to-weight ratios and weight histograms."""
        for key, w in weighted_layers(self.models[prefix], prefix).items():
            self.weights[key] = Histogram.of(w, self.bins)
            before = self._before.pop(key, None)
            if before is not None:
                norm = float(before.float().norm())
                self.update_ratios[key] = float((w.detach() - before).float().norm()) / max(norm, 1e-12)

    def record_scores(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        self.scores["D/scores_real"] = Histogram.of(real, self.bins)
        self.scores["D/scores_fake"] = Histogram.of(fake, self.bins)

    # ------------------------------------------------------------------------------------------------

    def scalars(self) -> dict[str, float]:
        out: dict[str, float] = {}
        out.update({f"dead_units/{k}": v for k, v in self.dead.items()})
        out.update({f"grad_norm_layer/{k}": v for k, v in self.grad_norms.items()})
        out.update({f"update_ratio/{k}": v for k, v in self.update_ratios.items()})
        for prefix in self.models:
            norms = [v for k, v in self.grad_norms.items() if k.startswith(prefix + ".")]
            if len(norms) >= 2 and norms[-1] > 0:
                # first layer / last layer: << 1 vanishing toward the input, >> 1 exploding
                out[f"grad_norm_first_over_last/{prefix}"] = norms[0] / norms[-1]
            dead = [v for k, v in self.dead.items() if k.startswith(prefix + ".")]
            if dead:
                out[f"dead_units_mean/{prefix}"] = sum(dead) / len(dead)
        return out

    def histograms(self) -> dict[str, Histogram]:
        out: dict[str, Histogram] = {}
        out.update({f"hist/weights/{k}": h for k, h in self.weights.items()})
        out.update({f"hist/grads/{k}": h for k, h in self.grads.items()})
        out.update({f"hist/pre_activations/{k}": h for k, h in self.activations.items()})
        out.update({f"hist/{k}": h for k, h in self.scores.items()})
        return out

    def warnings(self) -> list[str]:
        """Plain-language flags for what is far from healthy."""
        notes = []
        for key, r in self.update_ratios.items():
            if r < RATIO_LOW:
                notes.append(f"{key}: update/weight ratio {r:.1e} is far below ~{HEALTHY_UPDATE_RATIO:.0e}: "
                             "this layer barely learns (learning rate too low, or frozen/dead)")  # fmt: skip
            elif r > RATIO_HIGH:
                notes.append(f"{key}: update/weight ratio {r:.1e} is far above ~{HEALTHY_UPDATE_RATIO:.0e}: "
                             "updates swamp the weights (learning rate too high)")  # fmt: skip
        for key, share in self.dead.items():
            if share >= 0.5 and not math.isnan(share):
                notes.append(f"{key}: {share:.0%} of units never active in this batch (dead)")
        return notes
