from pathlib import Path

import pytest

from ucr.config import ExperimentConfig, ModelConfig, list_presets, load_config, parse_override


def test_presets_load_and_validate():
    names = list_presets()
    assert {"demo", "paper"} <= set(names)
    for name in names:
        config = load_config(name)
        assert config.name == name


def test_paper_preset_matches_the_paper():
    config = load_config("paper")
    assert config.codec.name == "encodec" and config.codec.latent_kind == "quantized"
    assert config.codec.bandwidth == 24.0
    assert config.model.n_components == 2
    assert config.model.unet_channels == (128, 128, 256, 256, 512)
    assert config.data.crop_frames == 512 and config.data.chunk_seconds == 7.0
    assert config.train.lr == 1e-4 and config.train.batch_size == 64


def test_overrides_from_command_line_strings():
    config = load_config("demo", ["model.n_components=3", "model.unet_channels=[32, 64, 128]", "train.lr=1e-3"])
    assert config.model.n_components == 3
    assert config.model.unet_channels == (32, 64, 128)
    assert config.train.lr == pytest.approx(1e-3)


def test_flat_dict_round_trip():
    config = load_config("demo", {"model.n_components": 4})
    flat = config.to_flat_dict()
    assert flat["model.n_components"] == 4
    assert all("." in key for key in flat if key != "name")
    assert ExperimentConfig.from_flat_dict(flat) == config
    assert ExperimentConfig.from_dict(config.to_dict()) == config


def test_replace_validates():
    config = load_config("demo")
    assert config.replace(**{"model.n_components": 5}).model.n_components == 5
    with pytest.raises(ValueError, match="model.n_components"):
        config.replace(**{"model.n_components": 0})


@pytest.mark.parametrize("override, field, hint", [
    ("model.n_components=0", "model.n_components", "[1, 16]"),
    ("model.dropout=1.5", "model.dropout", "[0, 0.9]"),
    ("train.lr=0", "train.lr", "(0, 1]"),
    ("codec.name=wavenet", "codec.name", "mdct"),
    ("codec.bandwidth=5", "codec.bandwidth", "24.0"),
    ("data.mix=median", "data.mix", "mean"),
    ("train.steps=1.5", "train.steps", "integer"),
    ("train.device=tpu", "train.device", "cuda"),
    ("model.unet_channels=[30, 64, 128]", "model.unet_channels", "divisible"),
])
def test_invalid_values_name_field_and_range(override, field, hint):
    with pytest.raises(ValueError) as info:
        load_config("demo", [override])
    assert field in str(info.value) and hint in str(info.value)


def test_unknown_keys_list_valid_ones():
    with pytest.raises(ValueError, match="n_components"):
        load_config("demo", ["model.n_component=3"])
    with pytest.raises(ValueError, match="section.field"):
        parse_override("n_components=3")
    with pytest.raises(ValueError, match="section.field=value"):
        parse_override("model.n_components")


def test_crop_must_fit_the_unet_and_the_chunk():
    with pytest.raises(ValueError, match="divisible"):
        load_config("demo", ["data.crop_frames=126"])  # demo U-Net has 3 levels: divisible by 4
    with pytest.raises(ValueError, match="longer than a chunk"):
        load_config("demo", ["data.crop_frames=1024"])
    # a chunk is counted in the codec's frames: 4 s are 300 frames at hop 320 (75 Hz), 150 at hop 640 (37.5 Hz)
    assert load_config("demo", ["codec.hop_length=320", "data.crop_frames=152"]).data.crop_frames == 152
    assert load_config("demo", ["codec.hop_length=640", "data.crop_frames=148"]).data.crop_frames == 148
    with pytest.raises(ValueError, match=r"150 frames at 37.5 Hz"):
        load_config("demo", ["codec.hop_length=640", "data.crop_frames=152"])


def test_unknown_preset_lists_shipped_ones(tmp_path):
    with pytest.raises(ValueError, match="demo"):
        load_config("no_such_preset")
    custom = tmp_path / "mine.yaml"
    custom.write_text("name: mine\nmodel:\n  n_components: 3\n")
    assert load_config(str(custom)).model.n_components == 3


def test_configs_are_frozen():
    with pytest.raises(Exception):
        ModelConfig().n_components = 3  # type: ignore[misc]


@pytest.mark.parametrize("space_file", sorted(Path(__file__).parents[1].joinpath("tune", "spaces").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_shipped_search_spaces_give_valid_configs(space_file):
    from tune.sweep import STAGE_METRICS, SweepSpace, trial_config

    space = SweepSpace.load(str(space_file))
    assert (space.metric, space.mode) == STAGE_METRICS[space.stage]
    for key, spec in space.params.items():
        values = spec["values"] if spec["type"] == "choice" else [spec["low"], spec["high"]]
        for value in values:  # every choice and both ends of every range must build
            config = trial_config(space, {key: value}, [])
            section, field = key.split(".")
            assert getattr(getattr(config, section), field) == (tuple(value) if isinstance(value, list) else
                                                                pytest.approx(value))


def test_the_component_strides_spread_over_any_number_of_components():
    for K, strides in ((2, (1, 8)), (3, (1, 3, 8)), (4, (1, 2, 4, 8))):
        assert load_config("smoke", {"model.n_components": K, "model.slowest_component_stride": 8}).model.strides() \
            == strides
    assert load_config("smoke", {"model.n_components": 3}).model.strides() == (1, 1, 1)  # the paper
    assert load_config("smoke", {"model.component_strides": [2, 1]}).model.strides() == (2, 1)
    assert load_config("demo", {"model.n_components": 3}).model.strides() == (1, 3, 8)  # the demo's asymmetry, K = 3
    with pytest.raises(ValueError, match="keep one"):
        load_config("smoke", {"model.component_strides": [1, 8], "model.slowest_component_stride": 8})
    with pytest.raises(ValueError, match="slowest_component_stride instead"):
        load_config("smoke", {"model.n_components": 3, "model.component_strides": [1, 8]})
