"""Training precision (``precision: bf16`` autocast, ``tf32``) on tiny models on the CPU: bf16 steps learn,
weights, optimizer states and the style statistics stay fp32, fp32 is the arithmetic it always was, bad
values are refused; and benchmarks/bench_gpu.py's smoke run."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from semi2i.config import ColorMapGANConfig, ConfigError, CycleGANConfig, SemI2IConfig, load_profile
from semi2i.losses import generator_loss
from semi2i.models.unet import UNet
from semi2i.training.colormapgan_step import ColorMapGANStep
from semi2i.training.cyclegan_step import CycleGANStep
from semi2i.training.multicity_step import MultiCityStep
from semi2i.training.semi2i_step import SemI2IStep
from semi2i.training.unet_step import UNetStep

TINY = dict(base_width=8, n_res_blocks=1, disc_width=8, patch_size=32)


def _batch(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 3, size, size, generator=g) * 2 - 1 for _ in range(2)]


def _floating(state):
    """Every floating tensor in a (nested) state dict."""
    if isinstance(state, torch.Tensor):
        return [state] if state.is_floating_point() else []
    if isinstance(state, dict):
        return [t for v in state.values() for t in _floating(v)]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in _floating(v)]
    return []


def test_bad_precision_and_tf32_are_refused_with_their_keys():
    with pytest.raises(ConfigError) as err:
        load_profile("quick", {"semi2i.precision": "fp16", "unet.precision": "half", "cyclegan.tf32": "yes"})
    text = str(err.value)
    assert "semi2i.precision: must be one of ['fp32', 'bf16', 'auto'], got 'fp16'" in text
    assert "unet.precision: must be one of ['fp32', 'bf16', 'auto'], got 'half'" in text
    assert "cyclegan.tf32: expected bool" in text
    p = load_profile("paper", {"semi2i.precision": "bf16", "unet.tf32": True})
    assert (p.semi2i.precision, p.unet.tf32, p.unet.precision, p.colormapgan.precision) == ("bf16", True, "fp32", "fp32")
    for name, arithmetic in (("paper", "fp32"), ("quick", "auto")):  # the paper in fp32, quick in the native one
        p = load_profile(name)
        assert {s.precision for s in (p.semi2i, p.unet, p.colormapgan, p.cyclegan)} == {arithmetic}
        assert not any(s.tf32 for s in (p.semi2i, p.unet, p.colormapgan, p.cyclegan))
    with pytest.raises(ValueError, match="precision must be one of"):
        UNetStep(UNet(3, 4, 8, 2), precision="fp16")


def test_auto_is_bf16_only_where_the_device_has_bf16_units(monkeypatch):
    """``auto`` resolves on the device that runs the network: bf16 on a CPU with AMX tiles or AVX512-BF16 (or
    CUDA >= sm80), fp32 elsewhere; the step's arithmetic follows (an AVX2-only CPU runs the plain fp32 step)."""
    from semi2i.models import precision as prec

    try:
        for probes, expected in (((True, False), "bf16"), ((False, True), "bf16"), ((False, False), "fp32")):
            prec._cpu_has_bf16.cache_clear()
            for name, answer in zip(("_is_amx_tile_supported", "_is_avx512_bf16_supported"), probes):
                monkeypatch.setattr(torch.cpu, name, lambda answer=answer: answer)
            assert prec.resolve_precision("cpu", "auto") == expected
            assert prec.autocast("cpu", "auto").fast_dtype == torch.bfloat16
            with prec.autocast("cpu", "auto"):
                assert torch.is_autocast_enabled("cpu") is (expected == "bf16")
            assert prec.resolve_precision("cpu", "fp32") == "fp32" and prec.resolve_precision("cpu", "bf16") == "bf16"
            model = UNet(3, 4, 8, 2)
            x, y = torch.rand(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
            torch.manual_seed(0)
            auto = UNetStep(copy.deepcopy(model), precision="auto").step(x, y)["loss"]
            torch.manual_seed(0)
            same = UNetStep(copy.deepcopy(model), precision=expected).step(x, y)["loss"]
            assert auto == same
    finally:
        prec._cpu_has_bf16.cache_clear()  # the real machine's answer again for the tests after this one, even after a failure
    assert prec.native_bf16("meta") is False
    assert load_profile("quick", {"semi2i.precision": "auto"}).semi2i.precision == "auto"


def test_semi2i_bf16_step_learns_and_keeps_fp32_state():
    torch.set_num_threads(1)
    step = SemI2IStep.create(SemI2IConfig(**TINY, ema_decay=0.9, lambda_tone=5.0, precision="bf16"))
    a, b = _batch()
    losses = [step(a, b) for _ in range(6)]
    assert all(torch.isfinite(torch.tensor(list(v.values()))).all() for v in losses)
    assert losses[-1]["L_G"] < losses[0]["L_G"] and losses[-1]["L_cross"] < losses[0]["L_cross"]
    state = step.state_dict()
    assert {t.dtype for t in _floating(state)} == {torch.float32}  # weights, Adam moments, EMA, Algorithm 1
    for stats in (step.style, step.style_ema):
        assert all(buf.dtype == torch.float32 and torch.isfinite(buf).all() for buf in stats.buffers())
        assert float(stats.sigma_a.min()) > 0  # Algorithm 1 ran on fp32 σ
    fp32 = SemI2IStep.create(SemI2IConfig(**TINY, ema_decay=0.9, lambda_tone=5.0))
    fp32.load_state_dict(state)  # a bf16 run's checkpoint resumes in fp32
    assert torch.isfinite(torch.tensor(fp32(a, b)["L_G"]))


def test_semi2i_fp32_step_is_the_plain_arithmetic():
    """precision unset = "fp32" = the step without any autocast (the numbers from before the option)."""
    a, b = _batch()
    unset, fp32 = SemI2IStep.create(SemI2IConfig(**TINY)), SemI2IStep.create(SemI2IConfig(**TINY, precision="fp32"))
    m = copy.deepcopy(unset.models)
    with torch.no_grad():
        for p in list(m.disc_a.parameters()) + list(m.disc_b.parameters()):
            p.requires_grad_(False)
        plain = generator_loss(a, b, m.generator(a, b), m.disc_a, m.disc_b, unset.cfg.lambdas, unset.cfg.lambda_tone)
    first = unset(a, b)
    assert first == fp32(a, b)
    assert first["L_G"] == float(plain["total"])
    bf16 = SemI2IStep.create(SemI2IConfig(**TINY, precision="bf16"))(a, b)
    assert bf16["L_G"] != first["L_G"] and abs(bf16["L_G"] - first["L_G"]) < 0.05 * first["L_G"]  # autocast ran


def test_unet_bf16_step_learns_and_fp32_is_unchanged():
    torch.set_num_threads(1)
    x = _batch(n=2)[0]
    y = torch.randint(0, 4, (2, 32, 32), generator=torch.Generator().manual_seed(1))
    models = []
    for _ in range(3):
        torch.manual_seed(0)
        models.append(UNet(3, 4, 8, 2))
    with torch.no_grad():
        plain = float(F.cross_entropy(copy.deepcopy(models[0])(x), y))
    default, fp32, bf16 = UNetStep(models[0], lr=1e-3), UNetStep(models[1], lr=1e-3, precision="fp32"), \
        UNetStep(models[2], lr=1e-3, precision="bf16")
    assert default.step(x, y)["loss"] == fp32.step(x, y)["loss"] == plain
    losses = [bf16.step(x, y)["loss"] for _ in range(5)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert losses[0] != plain and abs(losses[0] - plain) < 0.05 * plain  # autocast ran
    assert {t.dtype for t in _floating(bf16.state_dict())} == {torch.float32}


@pytest.mark.parametrize("kind", ["colormapgan", "cyclegan", "multicity"])
def test_other_gan_steps_run_in_bf16_with_fp32_state(kind):
    torch.set_num_threads(1)
    a, b = _batch()
    if kind == "colormapgan":
        step = ColorMapGANStep.create(ColorMapGANConfig(disc_width=8, patch_size=32, precision="bf16"))
        run = lambda: step.train_step(a, b)  # noqa: E731
    elif kind == "cyclegan":
        step = CycleGANStep.create(CycleGANConfig(base_width=8, n_res_blocks=1, disc_width=8, patch_size=32, pool_size=2,
                                                  precision="bf16"))
        run = lambda: step.train_step(a, b)  # noqa: E731
    else:
        step = MultiCityStep(SemI2IConfig(**TINY, precision="bf16"), ["x", "y", "z"])
        run = lambda: step.train_step(a, b, 0, 1)  # noqa: E731
    losses = [run() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(list(v.values()))).all() for v in losses)
    assert losses[-1]["L_G"] < losses[0]["L_G"]
    assert {t.dtype for t in _floating(step.state_dict())} == {torch.float32}  # CycleGAN: pooled fakes too


def test_bench_gpu_refuses_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    out = subprocess.run([sys.executable, "benchmarks/bench_gpu.py"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no CUDA device" in out.stderr, out.stderr


@pytest.mark.slow
def test_bench_gpu_cpu_smoke_run_writes_its_rows(tmp_path):
    out = tmp_path / "gpu.json"
    res = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--device", "cpu", "--tiny", "--threads", "1",
                          "--warmup", "1", "--steps", "1", "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["tiny"] is True
    rows = {(r["check"], r["mode"]): r for r in data["rows"]}
    assert set(rows) == {(c, m) for c in ("matmul_ceiling", "semi2i_train", "unet_train", "map") for m in ("fp32", "bf16")}
    for mode in ("fp32", "bf16"):
        assert rows[("matmul_ceiling", mode)]["tflops"] > 0
        for check in ("semi2i_train", "unet_train"):
            r = rows[(check, mode)]
            assert r["precision"] == mode and r["gflop_per_step"] > 0 and r["s_per_step"] > 0
            assert r["mfu"] == pytest.approx(r["tflops"] / rows[("matmul_ceiling", mode)]["tflops"])
        m = rows[("map", mode)]
        assert m["end_to_end_mpx_s"] > 0 and m["forward_alone_mpx_s"] > 0 and m["mpx"] == pytest.approx(0.066, abs=1e-3)
