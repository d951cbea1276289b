"""``semi2i.compile``: when a training compiles, and that a compiled step computes what the eager one does."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch._inductor.config

from semi2i.config import SemI2IConfig, load_profile
from semi2i.training import compile as compile_mod
from semi2i.training.compile import AUTO_MIN_STEPS, compile_in_place, should_compile
from semi2i.training.semi2i_step import SemI2IStep

TINY = SemI2IConfig(base_width=4, n_res_blocks=1, disc_width=4, patch_size=32, epochs=1, decay_epoch=0, lr=1e-3,
                    lambda_tone=5.0, ema_decay=0.9)


def test_when_a_training_compiles(monkeypatch):
    monkeypatch.setattr(compile_mod, "_has_cxx_compiler", lambda: True)
    assert should_compile("inductor", "cpu", 1) and not should_compile("eager", "cpu", 10**6)
    assert should_compile("auto", "cpu", AUTO_MIN_STEPS) and not should_compile("auto", "cpu", AUTO_MIN_STEPS - 1)
    assert not should_compile("auto", "cuda", 10**6)  # not measured on GPUs: eager there
    monkeypatch.setattr(compile_mod, "_has_cxx_compiler", lambda: False)
    assert not should_compile("auto", "cpu", 10**6)  # Inductor could not build its kernels
    with pytest.raises(ValueError, match="compile must be one of"):
        should_compile("jit", "cpu", 1)


def test_the_quick_profile_compiles_only_where_it_pays():
    assert load_profile("quick").semi2i.compile == "auto"
    assert load_profile("paper").semi2i.compile == "eager"
    with pytest.raises(ValueError, match="must be one of"):
        SemI2IConfig(compile="jit")


@pytest.mark.skipif(not compile_mod._has_cxx_compiler(), reason="Inductor needs a C++ compiler (g++, c++ or clang++) to build its CPU kernels")
def test_a_compiled_step_matches_the_eager_step():
    """Same start, same patches: the losses and weights after three steps agree to fp32 rounding, the state dict keeps
    its keys (checkpoints load either way) and the stylizing EMA generator stays an eager module.

    Inductor generates scalar C++ here (``cpp.simdlen: 1``): what this test checks is the wiring of ``semi2i.compile``
    (the graphs, the in-place compile, the eager EMA), the same with either code, and vectorised kernels cost twice the
    C++ compile time (a cold cache on a 2-core Zen 1 EPYC: 204 s against 112 s for the whole test; 48 kernels)."""
    torch.manual_seed(0)
    with torch._inductor.config.patch({"cpp.simdlen": 1}):
        _compiled_and_eager_steps_agree()


def _compiled_and_eager_steps_agree():
    a, b = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    eager = SemI2IStep.create(TINY, steps_per_epoch=3)
    compiled = SemI2IStep.create(TINY, steps_per_epoch=3)
    compile_in_place((compiled.generator, compiled.disc_a, compiled.disc_b))
    for _ in range(3):
        want, got = eager(a, b), compiled(a, b)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-5), key
    want_state, got_state = eager.state_dict(), compiled.state_dict()
    for part in ("generator", "disc_a", "disc_b", "generator_ema", "style_ema"):
        assert list(got_state[part]) == list(want_state[part])
        for key, value in want_state[part].items():
            torch.testing.assert_close(got_state[part][key], value, rtol=1e-3, atol=1e-5, msg=f"{part}.{key}")
    assert compiled.generator._compiled_call_impl is not None
    assert compiled.generator_ema._compiled_call_impl is None
    torch.testing.assert_close(compiled.stylize(a), eager.stylize(a), rtol=1e-3, atol=1e-4)
    assert dataclasses.asdict(TINY)["compile"] == "eager"
