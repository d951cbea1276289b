"""SemI2I training: Eq. 3, the step (gradients, Algorithm 1 hook, DDP), learning, resume, profiles."""

import dataclasses

import pytest
import torch
import torch.distributed as dist
from PIL import Image
from torch.nn.parallel import DistributedDataParallel

from semi2i.checkpoints import load_stylizing_models
from semi2i.config import ConfigError, SemI2IConfig, UNetTrainConfig, load_profile
from semi2i.training.schedule import cosine_learning_rate, semi2i_learning_rate, semi2i_step_learning_rate
from semi2i.training.semi2i_step import LOSS_KEYS, SemI2IStep, build_models, ema_rate
from semi2i.training.semi2i_trainer import checkpoint_path, steps_per_epoch, train_semi2i

SIZE = 32


def tiny_cfg(bands_a=3, bands_b=4, **kw):
    base = dict(base_width=4, n_res_blocks=1, disc_width=4, patch_size=SIZE)
    base.update(kw)
    return SemI2IConfig(in_bands_a=bands_a, in_bands_b=bands_b, **base)


def synthetic_patches(n, bands, palette, seed, size=SIZE):
    """Rectangles on a striped background; the two domains differ in colours (and band count)."""
    g = torch.Generator().manual_seed(seed)
    bg, fg, stripe = (torch.tensor(c).view(-1, 1, 1) for c in palette)
    patches = []
    for _ in range(n):
        mask = torch.zeros(size, size)
        for _ in range(3):
            y, x = torch.randint(0, size - 8, (2,), generator=g).tolist()
            h, w = torch.randint(4, size // 2, (2,), generator=g).tolist()
            mask[y : y + h, x : x + w] = 1.0
        period = int(torch.randint(4, 9, (1,), generator=g))
        stripes = ((torch.arange(size) // period) % 2).float().expand(size, size)
        img = bg * (1 - mask) + fg * mask + stripe * stripes * (1 - mask)
        patches.append((img + 0.05 * torch.randn(bands, size, size, generator=g)).clamp(-1, 1)[None])
    return patches


PALETTE_A = ([-0.6, -0.2, 0.4], [0.7, 0.1, -0.5], [0.2, 0.2, 0.2])
PALETTE_B = ([0.3, 0.5, -0.4, -0.8], [-0.5, -0.7, 0.6, 0.8], [-0.2, 0.1, 0.2, 0.3])


# --- Eq. 3 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("epoch,lr", [(0, 1e-3), (14, 1e-3), (15, 1e-3), (20, 5e-4), (24, 1e-4)])
def test_eq3_learning_rate(epoch, lr):
    assert semi2i_learning_rate(epoch, 1e-3, 25, 15) == pytest.approx(lr, rel=1e-12)


def test_eq3_rejects_epochs_outside_the_run():
    with pytest.raises(ValueError):
        semi2i_learning_rate(25, 1e-3, 25, 15)


@pytest.mark.parametrize("step,lr", [(0, 1e-3), (39, 1e-3), (40, 1e-3), (70, 5e-4), (99, 1e-3 / 60)])
def test_eq3_per_step_hand_values(step, lr):
    assert semi2i_step_learning_rate(step, 1e-3, 100, 40) == pytest.approx(lr, rel=1e-12)
    with pytest.raises(ValueError):
        semi2i_step_learning_rate(100, 1e-3, 100, 40)


def test_step_schedule_moves_the_rate_at_every_update_and_needs_the_loop_s_epoch_length():
    """lr_schedule "step": 3 epochs of 2 steps, decay from epoch 1: 1, 1, then 4/4, 3/4, 2/4, 1/4 (x lr)."""
    a = synthetic_patches(6, 3, PALETTE_A, seed=2)
    b = synthetic_patches(6, 4, PALETTE_B, seed=3)
    step = SemI2IStep.create(tiny_cfg(epochs=3, decay_epoch=1, lr_schedule="step"))
    with pytest.raises(RuntimeError, match="steps_per_epoch"):
        step(a[0], b[0])

    def rates(schedule: str) -> list[float]:
        step = SemI2IStep.create(tiny_cfg(epochs=3, decay_epoch=1, lr_schedule=schedule))
        step.steps_per_epoch = 2
        out = []
        for i in range(6):
            step.set_epoch(i // 2)
            out.append(step(a[i], b[i])["lr"])
        return out

    assert rates("step") == pytest.approx([1e-3, 1e-3, 1e-3, 7.5e-4, 5e-4, 2.5e-4], rel=1e-12)
    assert rates("epoch") == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3, 5e-4, 5e-4], rel=1e-12)


# --- the U-net fine-tune's cosine decay ----------------------------------------------------------
@pytest.mark.parametrize("step,lr", [(0, 1e-3), (25, 1e-3 * (2 + 2**0.5) / 4), (50, 5e-4), (75, 1e-3 * (2 - 2**0.5) / 4)])
def test_cosine_learning_rate_hand_values(step, lr):
    assert cosine_learning_rate(step, 1e-3, 100) == pytest.approx(lr, rel=1e-12)


def test_cosine_learning_rate_falls_to_a_small_positive_rate_and_rejects_steps_outside_the_run():
    rates = [cosine_learning_rate(s, 1e-3, 100) for s in range(100)]
    assert all(a > b for a, b in zip(rates, rates[1:])) and 0 < rates[-1] < 1e-6
    with pytest.raises(ValueError):
        cosine_learning_rate(100, 1e-3, 100)


# --- the step ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bands_a,bands_b", [(3, 4), (3, 1)])
def test_one_step_reaches_every_parameter(bands_a, bands_b):
    step = SemI2IStep.create(tiny_cfg(bands_a, bands_b, lambda_tone=2.0))
    losses = step(torch.rand(1, bands_a, SIZE, SIZE) * 2 - 1, torch.rand(1, bands_b, SIZE, SIZE) * 2 - 1)
    assert set(losses) == {*LOSS_KEYS, "lr"} and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert losses["L_G"] == pytest.approx(
        10 * losses["L_cross"] + 10 * losses["L_self"] + 10 * losses["L_grad"] + losses["L_adv_G"]
        + 2 * losses["L_tone"], rel=1e-5
    )
    m = step.models
    for name, module in (("generator", m.generator), ("disc_a", m.disc_a), ("disc_b", m.disc_b)):
        for pname, p in module.named_parameters():
            assert p.requires_grad, f"{name}.{pname} left frozen"
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}.{pname}"
    assert step.step == 1


def test_generator_update_leaves_discriminator_gradients_alone():
    """The G update must not spend work on D: only the D update (detached fakes) gives D gradients."""
    step = SemI2IStep.create(tiny_cfg())
    seen = []
    original = step.opt_d.zero_grad

    def spy(*args, **kwargs):  # called right before the D backward
        seen.append([p.grad for p in step.models.disc_a.parameters()])
        return original(*args, **kwargs)

    step.opt_d.zero_grad = spy
    step(torch.rand(1, 3, SIZE, SIZE), torch.rand(1, 4, SIZE, SIZE))
    assert all(g is None for g in seen[0])


def test_algorithm1_gets_the_reduced_batch_mean_statistics():
    calls = []

    def reduce(stats):  # stands in for the all-reduce of the Ray Train loop
        calls.append(stats.clone())
        return torch.ones_like(stats) * 2.0

    step = SemI2IStep.create(tiny_cfg(), reduce_style_stats=reduce)
    a, b = torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 4, SIZE, SIZE)
    with torch.no_grad():
        expected = step.models.generator(a, b)
    step(a, b)
    assert len(calls) == 1 and calls[0].shape == (4, 16)
    torch.testing.assert_close(calls[0][0], expected["mu_a"].mean(dim=0))  # batch mean, before the update
    torch.testing.assert_close(calls[0][3], expected["sigma_b"].mean(dim=0))
    for buf in step.style.buffers():  # 0.95·0 + 0.05·2, from the reduced values
        torch.testing.assert_close(buf, torch.full((16,), 0.1))


def test_the_same_step_runs_on_ddp_wrapped_modules(tmp_path):
    """World size 1 over gloo: wrapped and unwrapped training must give identical weights."""
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    cfg = tiny_cfg()
    data = [(torch.rand(1, 3, SIZE, SIZE), torch.rand(1, 4, SIZE, SIZE)) for _ in range(2)]
    plain = SemI2IStep.create(cfg)
    for a, b in data:
        plain(a, b)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        m = build_models(cfg)
        wrapped = SemI2IStep(
            cfg, DistributedDataParallel(m.generator), DistributedDataParallel(m.disc_a),
            DistributedDataParallel(m.disc_b), m.style,
        )
        for a, b in data:
            wrapped(a, b)
    finally:
        dist.destroy_process_group()
    for key, value in plain.state_dict()["generator"].items():
        torch.testing.assert_close(wrapped.state_dict()["generator"][key], value)
    torch.testing.assert_close(wrapped.style.mu_b, plain.style.mu_b)
    assert "style" not in dict(wrapped.generator.named_modules())  # stats live outside the DDP wrapper


def test_a_few_dozen_steps_lower_self_and_cross_reconstruction():
    a = synthetic_patches(8, 3, PALETTE_A, seed=0)
    b = synthetic_patches(8, 4, PALETTE_B, seed=1)
    step = SemI2IStep.create(tiny_cfg(base_width=8, disc_width=8))
    history = [step(a[i % 8], b[(3 * i) % 8]) for i in range(40)]
    for key in ("L_self", "L_cross"):
        first = sum(h[key] for h in history[:5]) / 5
        last = sum(h[key] for h in history[-5:]) / 5
        assert last < 0.75 * first, f"{key}: {first:.3f} -> {last:.3f}"


# --- trainer: epochs, schedule, checkpoints, resume --------------------------------------------
@pytest.mark.parametrize("extra,last_lr", [({}, 5e-4), ({"ema_decay": 0.9, "style_path": "carried"}, 5e-4),
                                           ({"lr_schedule": "step"}, 2.5e-4)], ids=["paper", "ema-carried", "per-step"])
def test_resumed_training_equals_uninterrupted(tmp_path, extra, last_lr):
    cfg = tiny_cfg(epochs=3, decay_epoch=1, checkpoint_every=2, preview_every=3, log_every=1, **extra)
    a = synthetic_patches(6, 3, PALETTE_A, seed=2)
    b = synthetic_patches(6, 4, PALETTE_B, seed=3)
    counts = dict(num_patches_a=2, num_patches_b=5)  # 2 steps per epoch, 6 in all
    full = train_semi2i(cfg, iter(a), iter(b), tmp_path / "full", **counts)
    assert full.step.step == full.total_steps == 6
    assert full.step.lr == pytest.approx(last_lr)  # Eq. 3 in the last epoch (1e-3 (3 - 2) / (3 - 1)), or its last step

    cut = train_semi2i(cfg, iter(a), iter(b), tmp_path / "cut", max_steps=3, **counts)  # mid-epoch stop
    assert cut.step.step == 3
    resumed = train_semi2i(cfg, iter(a[3:]), iter(b[3:]), tmp_path / "cut", **counts)
    assert resumed.step.step == 6
    s_full, s_res = full.step.state_dict(), resumed.step.state_dict()
    parts = ("generator", "disc_a", "disc_b", "style") + (("generator_ema", "style_ema") if "ema_decay" in extra else ())
    assert set(parts) <= set(s_res)
    for part in parts:
        for key, value in s_full[part].items():
            torch.testing.assert_close(s_res[part][key], value, rtol=1e-6, atol=1e-7, msg=f"{part}.{key}")
    assert s_res["opt_g"]["param_groups"][0]["lr"] == s_full["opt_g"]["param_groups"][0]["lr"]
    assert s_res["epoch"] == s_full["epoch"] == 2

    run = tmp_path / "full"
    assert checkpoint_path(run).is_file()
    assert list((run / "tensorboard" / "semi2i").glob("events.out.tfevents.*"))
    preview = Image.open(run / "previews" / "semi2i_step0000003.png")
    assert preview.size == (4 * SIZE, SIZE)  # A | fake A | B | fake B


# --- the stylizing generator: an EMA of the weights -----------------------------------------------
def test_ema_rate_warms_up_then_holds_the_decay():
    assert ema_rate(0.999, 0) == pytest.approx(0.1)
    assert ema_rate(0.999, 10) == pytest.approx(11 / 20)
    assert ema_rate(0.5, 10) == 0.5
    assert ema_rate(0.999, 10**6) == 0.999


def test_ema_generator_is_the_hand_computed_average_and_what_the_stylizer_loads(tmp_path):
    a = synthetic_patches(3, 3, PALETTE_A, seed=0)
    b = synthetic_patches(3, 4, PALETTE_B, seed=1)
    step = SemI2IStep.create(tiny_cfg(ema_decay=0.9))
    init = {k: v.clone() for k, v in step.models.generator.state_dict().items()}
    step(a[0], b[0])
    after_one = {k: v.clone() for k, v in step.models.generator.state_dict().items()}
    for key, avg in step.generator_ema.state_dict().items():  # step 0: rate min(0.9, 1/10) = 0.1
        torch.testing.assert_close(avg, 0.1 * init[key] + 0.9 * after_one[key], msg=key)
    step(a[1], b[1])  # step 1: rate 2/11
    for key, avg in step.generator_ema.state_dict().items():
        expect = (2 / 11) * (0.1 * init[key] + 0.9 * after_one[key]) + (9 / 11) * step.models.generator.state_dict()[key]
        torch.testing.assert_close(avg, expect, msg=key)
    assert not torch.equal(step.style_ema.mu_b, step.style.mu_b)  # Algorithm 1 on the EMA's own encoders

    path = step.save(tmp_path / "semi2i.pt")
    generator, style, _ = load_stylizing_models(path)
    for key, value in generator.state_dict().items():
        torch.testing.assert_close(value, step.generator_ema.state_dict()[key], msg=key)
    torch.testing.assert_close(style.mu_b, step.style_ema.mu_b)
    image = torch.rand(1, 3, 20, 28) * 2 - 1
    first = generator.stylize(image, "a", style)
    again, style_again, _ = load_stylizing_models(path)  # deterministic given the checkpoint
    assert torch.equal(first, again.stylize(image, "a", style_again))
    assert torch.equal(first, step.stylize(image))


def test_steps_per_epoch_is_the_smaller_domain_capped():
    assert steps_per_epoch(SemI2IConfig(), 120, 80) == 80
    assert steps_per_epoch(SemI2IConfig(max_steps_per_epoch=50), 120, 80) == 50
    with pytest.raises(ValueError):
        steps_per_epoch(SemI2IConfig(), 0, 80)


def test_a_one_shot_stream_that_ends_early_is_an_error(tmp_path):
    cfg = tiny_cfg(epochs=1, decay_epoch=1)
    a, b = synthetic_patches(1, 3, PALETTE_A, 0), synthetic_patches(3, 4, PALETTE_B, 1)
    with pytest.raises(RuntimeError, match="stream of domain A ended"):
        train_semi2i(cfg, iter(a), iter(b), tmp_path, num_patches_a=3, num_patches_b=3)


# --- profiles ----------------------------------------------------------------------------------
def test_paper_profile_holds_the_papers_settings():
    p = load_profile("paper")
    assert (p.name, p.patch_size, p.overlap) == ("paper", 256, 32)
    s = p.semi2i
    assert s.lambdas == (10.0, 10.0, 10.0, 1.0)
    assert (s.lr, s.epochs, s.decay_epoch, s.d_rate, s.patch_size, s.base_width) == (1e-3, 25, 15, 0.95, 256, 64)
    assert s.max_steps_per_epoch is None
    # NHWC is a memory layout (the same arithmetic), not a setting of the paper: 2.0x per bf16 step on an H200
    assert p.unet == UNetTrainConfig(64, 4, 256, 32, 8000, 2500, 1e-4, channels_last=True)


def test_quick_profile_is_smaller_and_overrides_apply():
    q = load_profile("quick", overrides={"semi2i.lr": 5e-4, "unet": {"train_steps": 7}})
    assert q.semi2i.patch_size < 256 and q.semi2i.base_width < 64 and q.semi2i.max_steps_per_epoch
    assert q.semi2i.lr == 5e-4 and q.unet.train_steps == 7
    assert dataclasses.replace(q.semi2i, in_bands_b=4).in_bands_b == 4


def test_bad_keys_give_one_clear_error_each(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\npatch_size: 256\noverlap: 32\n"
        "semi2i:\n  lrr: 0.1\n  epochs: ten\n  d_rate: 1.5\nunet:\n  batch_size: 0\nextra: 1\n"
    )
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    message = str(err.value)
    for expected in (
        "semi2i.lrr: unknown key (did you mean 'lr'?)",
        "semi2i.epochs: expected int, got str 'ten'",
        "unet.batch_size: must be > 0, got 0",
        "semi2i.d_rate: must be in (0, 1), got 1.5",
        "extra: unknown key",
    ):
        assert expected in message
    assert message.count("\n  - ") == 5  # one line per bad key, nothing else
    with pytest.raises(ConfigError, match="semi2i.lr: expected float, got str"):
        load_profile("quick", overrides={"semi2i.lr": "fast"})
    with pytest.raises(ConfigError, match="semi2i.patch_size: 512 exceeds the patch grid size 128"):
        load_profile("quick", overrides={"semi2i.patch_size": 512})
    with pytest.raises(ConfigError, match="unknown profile 'nope'; available: paper, quick"):
        load_profile("nope")
