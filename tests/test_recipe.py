"""The training recipe's parts: DiffAugment, the perceptual loss on pretrained features, the EMA warm-up, the
EfficientNet-Lite0 encoder, and a model that learns to return the hint colors it is given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colorizer.augment import DiffAugment
from colorizer.losses import PerceptualLoss
from colorizer.models.efficientnet import EfficientNetLite0
from colorizer.models.generator import EfficientUNetGenerator
from colorizer.train import Trainer, ema_beta, generator_input
from tests.test_train import images, tiny  # noqa: F401  (fixture)


def gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_diffaugment_moves_line_and_color_together_and_is_differentiable():
    line = torch.full((4, 1, 32, 48), 1.0)
    line[:, :, 10:12, :] = -1.0  # a horizontal line
    color = torch.zeros(4, 3, 32, 48, requires_grad=True)
    aug = DiffAugment("translation")
    a_line, a_color = aug(line, color.detach() + line.expand(-1, 3, -1, -1), generator=gen(0))
    assert a_line.shape == line.shape and a_color.shape == (4, 3, 32, 48)
    assert torch.equal(a_color[:, :1], a_line)  # the same shift for the line art and the color
    moved = [int((a_line[i, 0, :, 24] < 0).nonzero()[0]) for i in range(4)]
    assert len(set(moved)) > 1  # each sample its own draw
    out = DiffAugment()(line, color, generator=gen(1))[1]
    out.sum().backward()
    assert color.grad is not None and color.grad.abs().sum() > 0  # G's gradient flows through
    same = DiffAugment("")(line, color)
    assert same[0] is line and same[1] is color


def test_diffaugment_draws_for_a_share_of_the_global_batch_are_that_share():
    """What a DDP rank draws for its samples equals what one process draws for the same samples."""
    line, color = torch.randn(4, 1, 16, 16), torch.randn(4, 3, 16, 16)
    whole = DiffAugment()(line, color, generator=gen(7))
    for rank in range(2):
        part = DiffAugment()(line[2 * rank : 2 * rank + 2], color[2 * rank : 2 * rank + 2], generator=gen(7),
                             offset=2 * rank, total=4)  # fmt: skip
        assert torch.allclose(part[1], whole[1][2 * rank : 2 * rank + 2], atol=1e-6)
    with pytest.raises(ValueError, match="does not fit"):
        DiffAugment()(line, color, offset=2, total=4)


def test_perceptual_loss_uses_the_shipped_imagenet_weights_and_sees_structure():
    loss = PerceptualLoss()
    fresh = EfficientNetLite0(last_tap=2)
    assert not torch.equal(loss.net._conv_stem.weight, fresh._conv_stem.weight)  # loaded, not random
    assert not any(p.requires_grad for p in loss.parameters())  # frozen
    torch.manual_seed(0)
    img = torch.rand(2, 3, 64, 64) * 2 - 1
    assert loss(img, img).item() == pytest.approx(0.0, abs=1e-6)
    flat = img.mean(dim=(2, 3), keepdim=True).expand_as(img)  # the same mean colors, no structure
    noisy = (img + 0.05 * torch.randn_like(img)).clamp(-1, 1)
    assert loss(flat, img).item() > 3 * loss(noisy, img).item()


def test_perceptual_loss_runs_in_float32_under_cpu_autocast():
    """On the CPU the loss network leaves bf16 autocast (faster there, and exact): the same value as without it,
    and the gradient reaches a bf16 output."""
    loss = PerceptualLoss(pretrained=False)
    torch.manual_seed(0)
    fake, target = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    plain = loss(fake, target)
    out = fake.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(out, target)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(loss(out.detach().float(), target).item(), rel=1e-6)
    assert mixed.item() == pytest.approx(plain.item(), rel=2e-2)  # bf16 rounding of the input only
    mixed.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0


def test_ema_warms_up_then_holds_its_decay():
    assert ema_beta(1, 0.999) == pytest.approx(2 / 11)
    assert ema_beta(100, 0.999) == pytest.approx(101 / 110)
    assert ema_beta(100_000, 0.999) == 0.999
    assert ema_beta(1, 0.999, warmup=False) == 0.999
    # after 500 steps of a constant G, its share of G_ema (1 - prod of betas) is nearly all of it
    keep = np.prod([ema_beta(s, 0.999) for s in range(1, 501)])
    assert keep < 0.05  # with a fixed 0.999, 0.999**500 = 61% would still be the random init


def test_efficientnet_encoder_generator_shapes_and_frozen_statistics():
    G = EfficientUNetGenerator(decoder_widths=(32, 24, 16, 16, 8))
    x = torch.randn(2, 5, 64, 96)
    y = G.train()(x)
    assert y.shape == (2, 3, 64, 96) and y.abs().max() <= 1
    assert not any(m.training for m in G.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with pytest.raises(ValueError, match="divisible by 32"):
        G(torch.randn(1, 5, 48, 48))
    y.mean().backward()
    assert (
        G.hint_stem.weight.grad is not None and G.encoder._blocks[0]._depthwise_conv.weight.grad is not None
    )


def test_trainer_starts_the_efficientnet_encoder_from_imagenet_and_exports_it(images, tmp_path):  # noqa: F811
    from colorizer.export import export_checkpoint
    from colorizer.inference import Colorizer

    cfg = tiny(images, tmp_path, "model.G.encoder=efficientnet_lite0", "model.G.decoder_widths=[32,24,16,16,8]",
               "data.height_px=64", "data.width_px=96", "train.steps=2")  # fmt: skip
    trainer = Trainer(cfg)
    assert not torch.equal(trainer.G.encoder._conv_stem.weight, EfficientNetLite0()._conv_stem.weight)
    result = trainer.fit()
    model = Colorizer.load(export_checkpoint(result.last_checkpoint, tmp_path / "model"))
    assert model.multiple == 32
    from PIL import Image

    assert model.colorize(Image.new("L", (70, 50), 255)).size == (70, 50)


def test_inference_feeds_hints_in_the_training_encoding(images, tmp_path):  # noqa: F811
    """A layer painted with a training sample's hint colors reaches the network as that sample's tensors."""
    from colorizer.hints import hints_from_strokes
    from colorizer.inference import Colorizer

    cfg = tiny(images, tmp_path, "hints.no_hint_prob=0", "hints.count_min=8")
    batch = next(Trainer(cfg)._batches(Trainer(cfg)._datasets()[0]))
    hints, mask = batch["hints"][0].permute(1, 2, 0).numpy(), batch["mask"][0, 0].numpy()
    color = np.where(mask[..., None] > 0, (hints / np.maximum(mask, 1e-6)[..., None] + 1) / 2, 0)
    layer = (np.dstack([np.clip(color, 0, 1), mask]) * 255).round().astype(np.uint8)  # what a user paints
    rgb, m = hints_from_strokes(layer, soften_sigma_px=0.0)

    seen = []

    class Spy(torch.nn.Module):
        multiple = 8

        def forward(self, x):
            seen.append(x)
            return torch.zeros(x.shape[0], 3, *x.shape[2:])

    Colorizer([Spy()], [{}], torch.device("cpu")).colorize_lines(np.ones(mask.shape, np.float32), rgb, m)
    fed = seen[0][0]
    assert torch.allclose(fed[4], batch["mask"][0, 0], atol=1 / 255)
    assert torch.allclose(fed[1:4], batch["hints"][0], atol=2 / 255)


@pytest.mark.parametrize("hint_weight, obeyed", [(10.0, True), (0.0, False)])
def test_a_model_trained_on_hinted_samples_returns_the_hint_colors(images, tmp_path, hint_weight, obeyed):  # noqa: F811
    """Hints of colors unlike the target's: with the hint term the generator gives back, at the hints, the
    colors it was given (Delta E00 < 10); without it, the target's."""
    from colorizer.metrics import delta_e2000, rgb_to_lab

    cfg = tiny(images, tmp_path / str(hint_weight), "train.overfit_batches=1", "train.steps=300",
               "optim.lr_G=2e-3", "optim.schedule=constant", "loss.adversarial_weight=0",
               "loss.perceptual_weight=0", f"loss.hint_weight={hint_weight}", "hints.no_hint_prob=0",
               "hints.count_min=8", "hints.drop_range=[0,0]", "hints.radius_px=[1,1]", "hints.stroke_prob=0",
               "train.checkpoint_every=1000",
               "train.val_every=1000", "train.sample_every=1000")  # fmt: skip
    trainer = Trainer(cfg)
    batch = next(trainer._batches(trainer._datasets()[0]))
    wanted = torch.tensor([[0.9, -0.8, 0.7], [-0.9, 0.8, -0.6]]).view(2, 3, 1, 1)  # magenta, green
    batch = {**batch, "hints": batch["mask"] * wanted}
    trainer._batches = lambda _: iter(lambda: batch, None)  # the same batch, every step
    trainer.fit()
    with torch.no_grad():
        fake = trainer.G(generator_input(batch)).float()
    where = (batch["mask"] > 0.5)[:, 0]
    to01 = lambda x: (x.clamp(-1, 1) + 1) / 2  # noqa: E731
    de = delta_e2000(rgb_to_lab(to01(fake)), rgb_to_lab(to01(wanted.expand_as(fake))))[where]
    assert where.sum() > 20
    assert (float(de.median()) < 10.0) == obeyed, f"median Delta E00 at the hints {float(de.median()):.1f}"
