"""U-net shapes, the training step (learning, resume, DDP) and the inference helpers."""

import copy

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from semi2i.metrics import mean_iou, pixel_accuracy
from semi2i.models.unet import UNet, count_parameters
from semi2i.training.unet_step import UNetStep, evaluate, predict_logits, unwrap


@pytest.fixture(autouse=True)
def _one_thread():
    """The 2 cores are shared with other test runs; one thread also keeps results reproducible."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blobs(n: int, gen: torch.Generator, size: int = 32):
    """Smooth random blobs; the label is a brightness threshold (learnable, but not by a 1x1 conv alone)."""
    noise = torch.randn(n, 1, size, size, generator=gen)
    smooth = F.avg_pool2d(F.pad(noise, (3, 3, 3, 3), mode="circular"), 7, stride=1)
    smooth = smooth / smooth.std()
    labels = (smooth[:, 0] > 0).long()
    return smooth + 0.1 * torch.randn(smooth.shape, generator=gen), labels


def small_unet(bands=1, classes=2, seed=0):
    torch.manual_seed(seed)
    return UNet(bands, classes, base_width=8, depth=2)


@pytest.mark.parametrize("bands", [1, 3, 4])
@pytest.mark.parametrize("size", [(37, 45), (64, 64), (100, 130), (5, 7)])
def test_output_shape_any_size(bands, size):
    model = UNet(bands, 5, base_width=4, depth=4).eval()
    with torch.no_grad():
        out = model(torch.randn(2, bands, *size))
    assert out.shape == (2, 5, *size)
    assert torch.isfinite(out).all()


def test_wrong_band_count_is_rejected():
    with pytest.raises(ValueError, match="expected"):
        UNet(4, 2, base_width=4)(torch.randn(1, 3, 32, 32))


def test_parameter_count():
    # Classic width: ~31 M parameters (perf-notes' "U-net base 64 (31 M params)").
    assert 30_500_000 < count_parameters(UNet(3, 2)) < 31_500_000
    model = UNet(3, 2, base_width=8, depth=2)
    model.head.weight.requires_grad_(False)
    assert count_parameters(model) - count_parameters(model, trainable_only=True) == 8 * 2


def test_gradients_reach_every_parameter():
    model = small_unet(bands=3, classes=3)
    step = UNetStep(model)
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (2, 24, 24), generator=gen)
    step.step(torch.randn(2, 3, 24, 24, generator=gen), labels)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_learns_a_threshold_problem():
    model = small_unet()
    step = UNetStep(model, lr=5e-3)  # faster than the paper's 1e-4 so a test converges in 50 steps
    gen = torch.Generator().manual_seed(0)
    history = [step.step(*blobs(8, gen)) for _ in range(50)]
    assert history[-1]["step"] == 50
    first, last = history[0]["loss"], np.mean([h["loss"] for h in history[-5:]])
    assert last < 0.4 * first, (first, last)
    assert np.mean([h["pixel_acc"] for h in history[-5:]]) > 90

    held_out = [blobs(8, gen) for _ in range(2)]
    cm = evaluate(model, held_out, num_classes=2)
    assert cm.sum() == 2 * 8 * 32 * 32
    assert pixel_accuracy(cm) > 90 and mean_iou(cm) > 80
    assert model.training  # evaluate restored the training mode


def test_ignore_pixels_do_not_train_and_all_ignore_is_safe():
    model = small_unet()
    step = UNetStep(model)
    gen = torch.Generator().manual_seed(1)
    images, labels = blobs(2, gen)
    labels[:, :16] = 255
    out = step.step(images, labels)
    assert np.isfinite(out["loss"]) and 0 <= out["pixel_acc"] <= 100
    out = step.step(images, torch.full_like(labels, 255))
    assert out["loss"] == 0.0 and np.isnan(out["pixel_acc"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _run(step, batches):
    for images, labels in batches:
        step.step(images, labels)


def test_save_load_resumes_identically(tmp_path):
    gen = torch.Generator().manual_seed(2)
    batches = [blobs(4, gen, size=24) for _ in range(6)]

    straight = UNetStep(small_unet(seed=0), lr=1e-3)
    _run(straight, batches)

    first = UNetStep(small_unet(seed=0), lr=1e-3)
    _run(first, batches[:3])
    first.save(tmp_path / "ckpt.pt")
    resumed = UNetStep(small_unet(seed=123), lr=1e-3)  # different init: everything must come from the file
    resumed.load(tmp_path / "ckpt.pt")
    assert resumed.iteration == 3
    _run(resumed, batches[3:])

    assert resumed.iteration == straight.iteration == 6
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:  # same thread count, same ops: bit-identical
        assert torch.equal(a[key], b[key]), key


def test_state_dict_has_model_optimizer_step():
    step = UNetStep(small_unet())
    step.step(*blobs(2, torch.Generator().manual_seed(0)))
    state = step.state_dict()
    assert set(state) == {"model", "optimizer", "step"} and state["step"] == 1
    assert state["optimizer"]["state"]  # Adam moments are saved, not just the weights


def test_step_under_ddp_matches_plain_and_saves_unwrapped(tmp_path):
    """World size 1 (gloo): DDP's gradient averaging is the identity, so the result must match a plain run."""
    gen = torch.Generator().manual_seed(4)
    batches = [blobs(2, gen, size=16) for _ in range(2)]
    plain = UNetStep(small_unet(), lr=1e-3)
    _run(plain, batches)

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        wrapped = UNetStep(torch.nn.parallel.DistributedDataParallel(small_unet()), lr=1e-3)
        _run(wrapped, batches)
        state = wrapped.state_dict()
        logits = predict_logits(wrapped.model, batches[0][0])
    finally:
        dist.destroy_process_group()
    assert not any(key.startswith("module.") for key in state["model"])
    for key, value in plain.model.state_dict().items():
        torch.testing.assert_close(state["model"][key], value)
    assert logits.shape == (2, 2, 16, 16)
    assert unwrap(wrapped.model) is wrapped.model.module


def test_predict_logits_channels_last_matches_nchw_and_restores_mode():
    model = small_unet(bands=3, classes=4)
    _run(UNetStep(model), [(torch.randn(2, 3, 16, 16), torch.randint(0, 4, (2, 16, 16)))])  # non-trivial BN stats
    image = torch.randn(3, 37, 45)
    assert model.training
    nchw = predict_logits(model, image)
    assert model.training and nchw.shape == (4, 37, 45)

    inference = copy.deepcopy(model).prepare_for_inference(channels_last=True)
    assert not inference.training
    fast = predict_logits(inference, image.unsqueeze(0))
    assert fast.shape == (1, 4, 37, 45)
    torch.testing.assert_close(fast[0], nchw, rtol=1e-4, atol=1e-4)


def test_inference_preparation_folds_batchnorm_and_refuses_training():
    model = small_unet(bands=4, classes=3)
    _run(UNetStep(model), [(torch.randn(2, 4, 16, 16), torch.randint(0, 3, (2, 16, 16)))])
    image = torch.randn(1, 4, 20, 28)
    expected = predict_logits(model, image)

    plain = copy.deepcopy(model).prepare_for_inference(channels_last=False, fuse_batchnorm=False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    plain.train()  # not folded: still trainable

    folded = copy.deepcopy(model).prepare_for_inference(channels_last=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(predict_logits(folded, image), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="folded"):
        folded.train()


def test_channels_last_training_is_the_same_arithmetic():
    """UNetTrainConfig.channels_last changes the memory layout only: same losses, same weights, and the
    state loads into a plain NCHW model."""
    import torch

    from semi2i.models.unet import UNet
    from semi2i.training.unet_step import UNetStep

    torch.manual_seed(0)
    images, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    runs = []
    for channels_last in (False, True):
        torch.manual_seed(1)
        model = UNet(3, 4, base_width=4, depth=2)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        step = UNetStep(model, lr=1e-3)
        runs.append(([step.step(images, labels)["loss"] for _ in range(3)], model.state_dict()))
    (plain_losses, plain), (cl_losses, cl) = runs
    assert plain_losses == pytest.approx(cl_losses, rel=1e-4)
    assert plain_losses[-1] < plain_losses[0]
    for key, value in plain.items():
        torch.testing.assert_close(cl[key], value, rtol=1e-4, atol=1e-5, msg=key)
    nchw = UNet(3, 4, base_width=4, depth=2)
    nchw.load_state_dict(cl)
    assert all(p.is_contiguous() for p in nchw.parameters())
