"""Generator, discriminator and losses: shapes on non-square inputs, errors, init, gradients, loss values."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from colorizer.config import DiscriminatorConfig, GeneratorConfig, LossConfig
from colorizer.losses import AdversarialLoss, Objective
from colorizer.models import (
    PatchDiscriminator,
    UNetGenerator,
    build_discriminator,
    build_generator,
    group_count,
    init_weights,
)

NORMS = ["instance", "group", "batch", "none"]
UPSAMPLES = ["transpose", "resize"]
SIZES = [(32, 48), (48, 32)]
NORM_TYPES = (nn.InstanceNorm2d, nn.GroupNorm, nn.BatchNorm2d)
CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d)


def tiny_G(**kwargs) -> UNetGenerator:
    args = dict(base_width=4, depth=4, max_width=8)
    args.update(kwargs)
    return UNetGenerator(**args)


def tiny_D(**kwargs) -> PatchDiscriminator:
    args = dict(base_width=4, layers=3)
    args.update(kwargs)
    return PatchDiscriminator(**args)


def g_input(h: int, w: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A `(B, 5, H, W)` batch in the ranges the data gives: line and hints in [-1, 1], mask in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    line_hints = torch.rand(batch, 4, h, w, generator=g) * 2 - 1
    mask = (torch.rand(batch, 1, h, w, generator=g) < 0.1).float()
    return torch.cat([line_hints, mask], dim=1)


def d_input(h: int, w: int, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, h, w, generator=g) * 2 - 1, torch.rand(batch, 3, h, w, generator=g) * 2 - 1


def convs(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, CONV_TYPES)]


def conv_init_weight(m: nn.Module) -> torch.Tensor:
    """The weight init_weights set: the original one under spectral norm."""
    if parametrize.is_parametrized(m, "weight"):
        return m.parametrizations.weight.original
    return m.weight


# --------------------------------------------------------------------------------------------------
# Generator


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("upsample", UPSAMPLES)
@pytest.mark.parametrize("h, w", SIZES)
def test_generator_shape_and_range(norm, upsample, h, w):
    torch.manual_seed(0)
    G = tiny_G(norm=norm, upsample=upsample)
    y = G(g_input(h, w))
    assert y.shape == (2, 3, h, w)
    assert y.dtype == torch.float32
    assert y.min() >= -1 and y.max() <= 1


def test_generator_output_is_bounded_by_tanh():
    torch.manual_seed(0)
    G = tiny_G()
    with torch.no_grad():
        convs(G)[-1].bias.fill_(5.0)  # would push an unbounded output to ~5
    y = G(g_input(32, 48))
    assert y.max() <= 1 and y.max() > 0.99


@pytest.mark.parametrize("norm", NORMS)
def test_generator_handles_a_1x1_bottleneck_in_train_mode(norm):
    # 32x32 with depth 5 leaves 1x1 at the bottleneck: instance norm there would raise in train mode.
    torch.manual_seed(0)
    G = tiny_G(depth=5, norm=norm).train()
    for batch in (1, 2):
        if norm == "batch" and batch == 1:
            continue  # batch norm needs more than one value per channel; the decoder's first norm is 2x2
        assert G(g_input(32, 32, batch=batch)).shape == (batch, 3, 32, 32)


@pytest.mark.parametrize("h, w", [(30, 48), (32, 40), (8, 16)])
def test_generator_rejects_sizes_not_divisible_by_2_to_the_depth(h, w):
    G = tiny_G()
    with pytest.raises(ValueError, match=rf"divisible by 16 \(2\*\*depth\), got {h}x{w}; pad the input"):
        G(g_input(h, w))


def test_generator_rejects_wrong_channel_count():
    G = tiny_G()
    with pytest.raises(ValueError, match="expected 5 input channels .*got 4"):
        G(g_input(32, 48)[:, :4])
    with pytest.raises(ValueError, match="expected a"):
        G(torch.zeros(5, 32, 48))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(norm="layer"), "norm must be one of instance, group, batch, none"),
        (dict(upsample="pixelshuffle"), "upsample must be one of transpose, resize"),
        (dict(depth=0), "depth must be at least 1"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_generator_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_G(**kwargs)


def expected_generator_tensors(depth: int, norm: str) -> int:
    """Parameter tensors of a depth-D generator, counted from its layout (module docstring).

    2*D convs (D down, D up), each with weight and bias. Normalized: encoder levels 1..D-2 (not the
    outermost, not the bottleneck) and decoder levels 1..D-1 (not the outermost) = 2*D - 3 levels.
    A normalized conv has no bias (the norm's shift replaces it) and its norm adds scale and shift:
    +1 tensor per normalized level compared with norm="none".
    """
    n_convs = 2 * depth
    if norm == "none":
        return 2 * n_convs
    normalized = 2 * depth - 3
    return 2 * n_convs - normalized + 2 * normalized


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("upsample", UPSAMPLES)
@pytest.mark.parametrize("depth", [2, 4])
def test_generator_trainable_tensor_count(norm, upsample, depth):
    G = tiny_G(depth=depth, norm=norm, upsample=upsample)
    params = list(G.parameters())
    assert len(params) == expected_generator_tensors(depth, norm)
    assert all(p.requires_grad for p in params)
    n_norms = sum(isinstance(m, NORM_TYPES) for m in G.modules())
    assert n_norms == (0 if norm == "none" else 2 * depth - 3)
    assert len(convs(G)) == 2 * depth


def test_generator_tensor_counts_for_default_depth():
    assert expected_generator_tensors(7, "none") == 28
    assert expected_generator_tensors(7, "instance") == 39
    assert len(list(UNetGenerator(base_width=2, max_width=4, norm="instance").parameters())) == 39


def test_generator_widths_double_and_cap():
    G = tiny_G(base_width=4, depth=5, max_width=16)
    assert G.widths == [4, 8, 16, 16, 16]
    assert [level[-1 if i in (0, 4) else -2].out_channels for i, level in enumerate(G.encoder)] == G.widths
    assert G.multiple == 32


@pytest.mark.parametrize("norm", NORMS)
def test_generator_init_is_normal_and_never_zero(norm):
    torch.manual_seed(0)
    G = tiny_G(base_width=8, max_width=16, norm=norm)
    for m in convs(G):
        std = m.weight.std().item()
        assert 0.014 < std < 0.026, f"{m}: std {std}"
        if m.bias is not None:
            assert (m.bias == 0).all()
    for m in G.modules():
        if isinstance(m, NORM_TYPES):
            assert (m.weight - 1).abs().max() < 0.1 and (m.weight != 1).any()
            assert (m.bias == 0).all()


def test_batch_norm_generator_differs_between_train_and_eval():
    # train() normalizes with the batch's own statistics; eval() with the running averages (which
    # start at mean 0, var 1 and move 10% per train step). Inference and G_ema must run in eval().
    torch.manual_seed(0)
    G = tiny_G(norm="batch")
    x = g_input(32, 48)
    with torch.no_grad():
        y_train = G.train()(x)
        y_eval = G.eval()(x)
    assert not torch.allclose(y_train, y_eval, atol=1e-4)


@pytest.mark.parametrize("norm", ["instance", "group", "none"])
def test_other_norms_give_the_same_output_in_train_and_eval(norm):
    torch.manual_seed(0)
    G = tiny_G(norm=norm)
    x = g_input(32, 48)
    with torch.no_grad():
        assert torch.equal(G.train()(x), G.eval()(x))


def test_dropout_acts_in_train_mode_only():
    torch.manual_seed(0)
    G = tiny_G(dropout=0.5)
    # the 3 decoder levels next to the bottleneck, never the outermost one
    dropouts = [any(isinstance(m, nn.Dropout) for m in level) for level in G.decoder]
    assert dropouts == [True, True, True, False]
    x = g_input(32, 48)
    with torch.no_grad():
        G.train()
        assert not torch.allclose(G(x), G(x))
        G.eval()
        assert torch.equal(G(x), G(x))
    assert not any(isinstance(m, nn.Dropout) for m in tiny_G(dropout=0.0).modules())


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("upsample", UPSAMPLES)
def test_gradients_reach_every_generator_parameter_and_input_channel(norm, upsample):
    torch.manual_seed(0)
    G = tiny_G(norm=norm, upsample=upsample, dropout=0.2).train()
    x = g_input(32, 48).requires_grad_(True)
    target = torch.rand(2, 3, 32, 48) * 2 - 1
    F.mse_loss(G(x), target).backward()
    for name, p in G.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"
    # line, the three hint channels and the mask all reach the output
    assert (x.grad.abs().sum(dim=(0, 2, 3)) > 0).all()


def test_freeze_encoder_levels():
    torch.manual_seed(0)
    G = tiny_G()
    G.freeze_encoder(2)
    frozen = {id(p) for level in G.encoder[:2] for p in level.parameters()}
    assert frozen
    for p in G.parameters():
        assert p.requires_grad == (id(p) not in frozen)
    F.mse_loss(G(g_input(32, 48)), torch.zeros(2, 3, 32, 48)).backward()
    for p in G.parameters():
        assert (p.grad is None) == (id(p) in frozen)
    G.freeze_encoder(0)
    assert all(p.requires_grad for p in G.parameters())
    with pytest.raises(ValueError, match=r"levels must be in \[0, 4\]"):
        G.freeze_encoder(5)


def test_build_generator_from_config():
    cfg = GeneratorConfig(base_width=4, depth=4, max_width=8, norm="group", upsample="transpose", dropout=0.1)
    G = build_generator(cfg)
    assert G.multiple == 16 and G.widths == [4, 8, 8, 8]
    assert any(isinstance(m, nn.ConvTranspose2d) for m in G.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in G.modules())
    assert any(isinstance(m, nn.Dropout) for m in G.modules())
    assert G(g_input(48, 32)).shape == (2, 3, 48, 32)


def test_group_count_divides_channels():
    assert group_count(64) == 32
    assert group_count(4) == 4
    assert group_count(48) == 24
    assert group_count(7) == 7
    assert group_count(66) == 22


# --------------------------------------------------------------------------------------------------
# Discriminator


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("spectral_norm", [False, True])
@pytest.mark.parametrize("h, w", SIZES)
def test_discriminator_shape(norm, spectral_norm, h, w):
    torch.manual_seed(0)
    D = tiny_D(norm=norm, spectral_norm=spectral_norm)
    scores = D(*d_input(h, w))
    # 3 stride-2 convs, then two stride-1 4x4 convs that each lose one pixel
    assert scores.shape == (2, 1, h // 8 - 2, w // 8 - 2)
    assert D.output_size(h, w) == (h // 8 - 2, w // 8 - 2)


def test_discriminator_scores_are_raw_not_sigmoid():
    torch.manual_seed(0)
    D = tiny_D(norm="none")
    with torch.no_grad():
        convs(D)[-1].bias.fill_(3.0)
    assert D(*d_input(32, 48)).min() > 2.5


def test_discriminator_is_conditioned_on_the_line_art():
    torch.manual_seed(0)
    D = tiny_D()
    line, color = d_input(32, 48)
    assert not torch.allclose(D(line, color), D(-line, color))


def test_discriminator_rejects_bad_inputs():
    D = tiny_D()
    line, color = d_input(32, 48)
    with pytest.raises(ValueError, match="1 line channel"):
        D(color, color)
    with pytest.raises(ValueError, match="must share batch size, H and W"):
        D(line[:, :, :, :40], color)
    with pytest.raises(ValueError, match="at least 24"):
        D(*d_input(16, 48))
    with pytest.raises(ValueError, match="norm must be one of"):
        tiny_D(norm="layer")


def expected_discriminator_tensors(layers: int, norm: str) -> int:
    """`layers + 2` convs; the `layers` middle ones are normalized (no bias, norm scale and shift)."""
    n_convs = layers + 2
    return 2 * n_convs if norm == "none" else 2 * n_convs + layers


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("spectral_norm", [False, True])
@pytest.mark.parametrize("layers", [2, 3])
def test_discriminator_trainable_tensor_count(norm, spectral_norm, layers):
    D = tiny_D(norm=norm, spectral_norm=spectral_norm, layers=layers)
    params = list(D.parameters())
    assert len(params) == expected_discriminator_tensors(layers, norm)
    assert all(p.requires_grad for p in params)
    assert len(convs(D)) == layers + 2
    assert all(parametrize.is_parametrized(m, "weight") == spectral_norm for m in convs(D))


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_discriminator_init_is_normal_and_never_zero(spectral_norm):
    torch.manual_seed(0)
    D = tiny_D(base_width=8, spectral_norm=spectral_norm)
    for m in convs(D):
        std = conv_init_weight(m).std().item()
        assert 0.014 < std < 0.026, f"{m}: std {std}"
        assert m.weight.abs().sum() > 0  # the weight the conv uses (normalized under spectral norm)
        if m.bias is not None:
            assert (m.bias == 0).all()
    for m in D.modules():
        if isinstance(m, NORM_TYPES):
            assert (m.weight - 1).abs().max() < 0.1 and (m.bias == 0).all()


def spectral_norms(D: nn.Module) -> list[float]:
    with torch.no_grad():
        return [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() for m in convs(D)]


def test_spectral_norm_weights_have_unit_norm_after_init():
    torch.manual_seed(0)
    D = tiny_D(base_width=8, spectral_norm=True).eval()  # eval: no extra power iteration on access
    assert spectral_norms(D) == pytest.approx([1.0] * 5, abs=0.03)
    # re-initializing a parametrized model sets the original weights and refreshes the power iteration
    init_weights(D, std=0.5)
    for m in convs(D):
        assert 0.35 < m.parametrizations.weight.original.std().item() < 0.65
    assert spectral_norms(D) == pytest.approx([1.0] * 5, abs=0.03)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_gradients_reach_every_discriminator_parameter(norm, spectral_norm):
    torch.manual_seed(0)
    D = tiny_D(norm=norm, spectral_norm=spectral_norm).train()
    scores = D(*d_input(32, 48))
    F.mse_loss(scores, torch.randn_like(scores)).backward()
    for name, p in D.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_build_discriminator_from_config():
    D = build_discriminator(DiscriminatorConfig(base_width=4, layers=2, norm="batch", spectral_norm=True))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 2
    assert all(parametrize.is_parametrized(m, "weight") for m in convs(D))
    assert D(*d_input(48, 32)).shape == (2, 1, 48 // 4 - 2, 32 // 4 - 2)


# --------------------------------------------------------------------------------------------------
# Losses


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values).reshape(1, 1, 1, -1)


def test_lsgan_values():
    loss = AdversarialLoss("lsgan")
    real, fake = loss.d_loss(t(1, 1, 1), t(0, 0, 0))
    assert real.item() == 0 and fake.item() == 0
    real, fake = loss.d_loss(t(0.5, 1.5), t(1.0, -1.0))
    assert real.item() == pytest.approx(0.25) and fake.item() == pytest.approx(1.0)
    assert loss.g_loss(t(1, 1)).item() == 0
    assert loss.g_loss(t(0.0, 3.0)).item() == pytest.approx((1 + 4) / 2)


def test_hinge_values():
    loss = AdversarialLoss("hinge")
    real, fake = loss.d_loss(t(2.0, 0.5, -1.0), t(-2.0, 0.0, 0.5))
    assert real.item() == pytest.approx((0 + 0.5 + 2) / 3)
    assert fake.item() == pytest.approx((0 + 1 + 1.5) / 3)
    assert loss.g_loss(t(-2.0, 0.0, 0.5)).item() == pytest.approx(0.5)


def test_vanilla_values():
    loss = AdversarialLoss("vanilla")
    real_scores, fake_scores = torch.randn(2, 1, 2, 4), torch.randn(2, 1, 2, 4)
    real, fake = loss.d_loss(real_scores, fake_scores)
    assert torch.allclose(real, F.binary_cross_entropy_with_logits(real_scores, torch.ones_like(real_scores)))
    assert torch.allclose(
        fake, F.binary_cross_entropy_with_logits(fake_scores, torch.zeros_like(fake_scores))
    )
    g = loss.g_loss(fake_scores)
    assert torch.allclose(g, F.binary_cross_entropy_with_logits(fake_scores, torch.ones_like(fake_scores)))
    real, fake = loss.d_loss(t(0, 0), t(0, 0))
    assert real.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert fake.item() == pytest.approx(real.item())


@pytest.mark.parametrize("kind", ["lsgan", "vanilla", "hinge"])
def test_losses_are_float32_under_bf16(kind):
    objective = Objective(LossConfig(adversarial=kind, perceptual_weight=0.0, diffaugment=""))
    scores = torch.randn(2, 1, 2, 4).bfloat16()
    fake, target = torch.rand(2, 3, 4, 6).bfloat16(), torch.rand(2, 3, 4, 6).bfloat16()
    batch = {"color": target, "hints": torch.zeros(2, 3, 4, 6), "mask": torch.zeros(2, 1, 4, 6)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, d = objective.discriminator(scores, scores)
        _, g = objective.generator(fake, batch, scores)
    for value in (*d.values(), *g.values()):
        assert value.dtype == torch.float32 and value.ndim == 0
    # same value as float32 inputs holding the same (bf16-rounded) numbers
    expected = AdversarialLoss(kind).g_loss(scores.float())
    assert g["loss/G_adversarial"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_g_objective_is_the_weighted_sum_of_named_terms():
    cfg = LossConfig(adversarial="lsgan", l1_weight=10.0, mse_weight=2.0, perceptual_weight=0.0, hint_weight=3.0,
                     adversarial_weight=0.5, diffaugment="")  # fmt: skip
    objective = Objective(cfg)
    fake = torch.tensor([1.0, -1.0]).reshape(1, 1, 1, 2).expand(1, 3, 1, 2)
    mask = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    hints = torch.full((1, 3, 1, 2), 0.5) * mask  # a hint of color 0.5 on the first pixel
    batch = {"color": torch.zeros(1, 3, 1, 2), "hints": hints, "mask": mask}
    total, parts = objective.generator(fake, batch, t(0.0, 0.0))
    assert parts["loss/G_l1"].item() == pytest.approx(1.0)
    assert parts["loss/G_mse"].item() == pytest.approx(1.0)
    assert parts["loss/G_hint"].item() == pytest.approx(0.5)  # |1 - 0.5| at the hinted pixel only
    assert parts["loss/G_adversarial"].item() == pytest.approx(1.0)
    assert "loss/G_perceptual" not in parts  # weight 0: not computed
    assert total.item() == pytest.approx(10 * 1 + 2 * 1 + 3 * 0.5 + 0.5 * 1) == parts["loss/G"].item()
    real, d = objective.discriminator(t(0.0, 0.0), t(1.0, 1.0))
    assert (d["loss/D_real"].item(), d["loss/D_fake"].item()) == (1.0, 1.0)
    assert real.item() == pytest.approx(2.0)  # not halved: under Adam a constant factor changes nothing
    no_hints = {**batch, "mask": torch.zeros_like(mask), "hints": torch.zeros_like(hints)}
    assert objective.generator(fake, no_hints, t(0.0, 0.0))[1]["loss/G_hint"].item() == 0.0


def test_bad_loss_name_and_weights():
    with pytest.raises(ValueError, match="must be one of lsgan, vanilla, hinge; got 'wgan'"):
        AdversarialLoss("wgan")
    with pytest.raises(ValueError, match="loss.l1_weight=-1"):
        Objective(LossConfig(l1_weight=-1, perceptual_weight=0.0))
    with pytest.raises(ValueError, match="reconstruction term"):
        Objective(LossConfig(l1_weight=0.0, mse_weight=0.0, perceptual_weight=0.0))
    with pytest.raises(ValueError, match="diffaugment: unknown 'zoom'"):
        Objective(LossConfig(diffaugment="color,zoom", perceptual_weight=0.0))
