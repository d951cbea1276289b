"""One config schema (semi2i.schema): every bad key of a profile, an adapt config and its tune section is
reported at once, one line each, with its dotted path, what was wrong and a suggestion for a typo."""

import dataclasses

import pytest
import yaml

from semi2i.config import ConfigError, SemI2IConfig, load_profile, merge_overrides

#: (override, the exact line it must give): types, ranges, choices, unknown keys, sections, relations
PROFILE_CASES = [
    ({"semi2i.lrr": 0.1}, "semi2i.lrr: unknown key (did you mean 'lr'?)"),
    ({"colormapgan.binz": 8}, "colormapgan.binz: unknown key (did you mean 'bins'?)"),
    ({"extra": 1}, "extra: unknown key (known: name, patch_size, overlap, semi2i, unet, colormapgan, cyclegan)"),
    ({"cyclegan.epochs": "ten"}, "cyclegan.epochs: expected int, got str 'ten'"),
    ({"semi2i.lr": "fast"}, "semi2i.lr: expected float, got str 'fast'"),
    ({"semi2i.max_steps_per_epoch": "x"}, "semi2i.max_steps_per_epoch: expected int or null, got str 'x'"),
    ({"colormapgan.beta1": True}, "colormapgan.beta1: expected float, got bool True"),
    ({"unet.finetune_lr_schedule": 3}, "unet.finetune_lr_schedule: expected str, got int 3"),
    ({"semi2i.d_rate": 1.5}, "semi2i.d_rate: must be in (0, 1), got 1.5"),
    ({"unet.batch_size": 0}, "unet.batch_size: must be > 0, got 0"),
    ({"cyclegan.pool_size": -1}, "cyclegan.pool_size: must be >= 0, got -1"),
    ({"cyclegan.patch_size": 62}, "cyclegan.patch_size: must be divisible by 4 (two stride-2 convs), got 62"),
    ({"semi2i.style_path": "y"}, "semi2i.style_path: must be one of ['normalised', 'carried'], got 'y'"),
    ({"semi2i.lr_schedule": "cosine"}, "semi2i.lr_schedule: must be one of ['epoch', 'step'], got 'cosine'"),
    ({"semi2i.decay_epoch": 99}, "semi2i.decay_epoch: must be in [0, epochs=5], got 99"),
    ({"overlap": 999}, "overlap: must be in [0, patch_size=128), got 999"),
]


def test_a_profile_reports_every_bad_key_at_once_one_line_each():
    overrides = {}
    for override, _ in PROFILE_CASES:
        overrides.update(override)
    with pytest.raises(ConfigError) as err:
        load_profile("quick", overrides)
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid profile 'quick':"
    assert sorted(lines[1:]) == sorted(f"  - {expected}" for _, expected in PROFILE_CASES)


@pytest.mark.parametrize("override, expected", PROFILE_CASES, ids=[e.split(":")[0] for _, e in PROFILE_CASES])
def test_each_bad_key_alone(override, expected):
    with pytest.raises(ConfigError) as err:
        load_profile("quick", override)
    assert str(err.value).splitlines()[1:] == [f"  - {expected}"]


def test_missing_keys_and_a_section_that_disagrees_with_the_grid(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"semi2i": {"patch_size": 512}}))
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert str(err.value).splitlines()[1:] == ["  - name: missing (required)", "  - patch_size: missing (required)",
                                               "  - overlap: missing (required)"]
    with pytest.raises(ConfigError) as err:
        load_profile("quick", {"unet": [1]})
    assert str(err.value).splitlines()[1:] == ["  - unet: expected a mapping of settings, got list"]
    with pytest.raises(ConfigError, match=r"semi2i\.patch_size: 512 exceeds the patch grid size 128"):
        load_profile("quick", {"semi2i.patch_size": 512})


def test_settings_are_frozen_validated_dataclasses():
    quick = load_profile("quick")
    assert dataclasses.replace(quick.semi2i, in_bands_b=4, lambda_tone=2).lambda_tone == 2.0  # ints are floats
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.semi2i.lr = 1.0
    with pytest.raises(ValueError, match="decay_epoch: must be in"):
        dataclasses.replace(quick.semi2i, decay_epoch=99)  # replace validates too
    assert SemI2IConfig(**dataclasses.asdict(quick.semi2i)) == quick.semi2i  # how checkpoints store them


def test_merge_overrides_takes_nested_and_dotted_keys():
    base = {"semi2i": {"lr": 1.0, "epochs": 3}, "unet.lr": 2.0}
    assert merge_overrides(base, {"semi2i.lr": 5.0, "unet": {"depth": 2}}) == {
        "semi2i": {"lr": 5.0, "epochs": 3}, "unet": {"lr": 2.0, "depth": 2}}


def test_an_adapt_config_with_a_tune_section_reports_every_bad_key_at_once(tmp_path):
    """The adapt file, its profile overrides and its tune section: one schema, one message style."""
    from semi2i.tuning.settings import load_sweep_config

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({
        "source": {"images": 3, "palette": "p.json", "nodat": 0}, "target": {"labels": "t/*.tif"}, "classes": [],
        "methods": ["semi2i", "foo"], "workers": 0, "gpu": "yes", "data_plane": "disk", "colour": 1, "overrides": {"semi2i": {"lrr": 1}},
        "tune": {"num_samples": 0, "metrc": "miou", "driver_cpus": -1, "space": {"lr": [1, 2]}}}))
    with pytest.raises(ConfigError) as err:
        load_sweep_config(path)
    expected = [f"{path}: {line}" for line in (
        "unknown key 'colour' (known: name, profile, overrides, classes, seed, workers, gpu, data_plane, synthetic, "
        "source, target, methods, lanes)",
        "'source.images' must be a path/glob or a list of them",
        "unknown key 'source.nodat' (did you mean 'nodata'?)",
        "'target.images' is required",
        "'classes' must be a non-empty list of class names",
        "'methods' must be a list from ['source_only', 'histogram_matching', 'gray_world', 'colormapgan', 'cyclegan', "
        "'semi2i', 'target_oracle'], got ['semi2i', 'foo']",
        "'workers' must be >= 1",
        "'gpu' must be bool, got str 'yes'",
        "'data_plane' must be one of ['auto', 'ray_data', 'worker']",
        "invalid profile 'quick':",
        "'tune.num_samples' must be > 0, got 0",
        "unknown key 'tune.metrc' (did you mean 'metric'?)",
        "'tune.driver_cpus' must be a number >= 0, got -1.0",
        "'tune.space.lr': unknown search key (known: lambda_cross, lambda_self, lambda_grad, lambda_adv, lambda_tone, "
        "decay_epoch)",
    )] + ["  - semi2i.lrr: unknown key (did you mean 'lr'?)"]
    assert sorted(str(err.value).splitlines()) == sorted(expected)


def test_a_numeric_run_name_is_a_name(tmp_path):
    from semi2i.adapt_config import load_adapt_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": 2024, "synthetic": {}}))
    assert load_adapt_config(path).name == "2024"


def test_a_per_model_seed_in_overrides_is_refused_not_ignored():
    """The run's seed seeds every model of a run: `overrides: semi2i: {seed: ...}` used to be accepted and
    silently ignored (two runs that differed only in it trained the same generator)."""
    from semi2i.adapt_config import adapt_config_from_dict

    with pytest.raises(ConfigError, match=r"x\.yaml: overrides semi2i\.seed, unet\.seed: a run's models take the run's seed"):
        adapt_config_from_dict({"name": "x", "synthetic": {"size": 64},
                                "overrides": {"semi2i": {"ema_decay": 0.9, "seed": 1000}, "unet.seed": 3}}, "x.yaml")
    assert adapt_config_from_dict({"name": "x", "synthetic": {"size": 64}, "seed": 7}, "x.yaml").seed == 7
