"""Config errors name the file, the line and the key (models.config)."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import pytest

from posestream.models.config import ConfigError, Locations, from_section, load_yaml, locate
from posestream.models.fields.decoder import DecoderConfig
from posestream.stream.track import TrackerConfig
from posestream.training.data.augment import AugmentConfig
from posestream.training.losses import LossConfig


def _write(tmp_path, text, name="x.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


PIPELINE = """
# a pipeline config
sources:
  - a.mp4
  - rtsp://cam/1
track:
  min_oks: 0.5
  max_age_s: high
render:
  hud: true
"""


# ---------------------------------------------------------------------------------- load_yaml

def test_load_yaml_gives_safe_load_values_and_the_line_of_every_key(tmp_path):
    import yaml

    p = _write(tmp_path, PIPELINE + "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\nlr: 1e-4\n")
    d, locs = load_yaml(p)
    assert d == yaml.safe_load(p.read_text())
    assert d["lr"] == "1e-4"                          # YAML 1.1, as safe_load
    assert isinstance(locs, Locations)
    assert locs[("sources",)] == 2 and locs[("sources", 1)] == 4
    assert locs[("track",)] == 5 and locs[("track", "min_oks")] == 6 and locs[("track", "max_age_s")] == 7
    assert locs[("render", "hud")] == 9 and locs[("other", "y")] == 13
    assert locs.line(("track", "min_hits")) == 5      # a key the file does not set: its section
    assert locs.line(("nothing", "here")) == locs[()] == 2


def test_empty_file_is_an_empty_mapping(tmp_path):
    assert load_yaml(_write(tmp_path, "# nothing\n")) == ({}, {})


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    p = _write(tmp_path, """
        track:
          min_oks: 0.5
          bad: [1, 2
        render: {}
        """)
    with pytest.raises(ConfigError) as e:
        load_yaml(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:4: YAML syntax error: ") and "\n" not in msg
    assert "column" in msg
    p2 = _write(tmp_path, "a: b: c\n", "y.yaml")
    with pytest.raises(ConfigError, match=r"y\.yaml:1: YAML syntax error: mapping values are not allowed here"):
        load_yaml(p2)
    p3 = _write(tmp_path, "a: 1\n---\nb: 2\n", "z.yaml")
    with pytest.raises(ConfigError, match=r"z\.yaml:2: YAML syntax error: .*single document"):
        load_yaml(p3)


def test_missing_directory_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_yaml(tmp_path)
    with pytest.raises(ConfigError, match=r"l\.yaml:1: the top level must be a mapping of keys, got a list"):
        load_yaml(_write(tmp_path, "- 1\n- 2\n", "l.yaml"))
    with pytest.raises(ConfigError, match=r"s\.yaml:1: .*got a str"):
        load_yaml(_write(tmp_path, "just text\n", "s.yaml"))
    with pytest.raises(ConfigError) as info:
        load_yaml(tmp_path / "nope.yaml")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------- from_section + locate

def test_wrong_type_names_the_key_and_locate_gives_the_line(tmp_path):
    p = _write(tmp_path, PIPELINE)
    d, locs = load_yaml(p)
    with pytest.raises(ConfigError) as e:
        TrackerConfig.from_dict(d["track"])
    err = e.value
    assert isinstance(err, ValueError) and err.path == ("max_age_s",)
    assert str(err) == "tracker option max_age_s: expected a number, got 'high' (str)"
    assert locate(err, locs, p, ("track",)) == f"{p}:7: track.max_age_s: expected a number, got 'high' (str)"
    assert locate(err.under("track"), locs, "configs/x.yaml") == \
        "configs/x.yaml:7: track.max_age_s: expected a number, got 'high' (str)"


def test_unknown_key_keeps_its_message_with_the_key_path(tmp_path):
    p = _write(tmp_path, "track:\n  min_oks: 0.5\n  max_age: 2\n")
    d, locs = load_yaml(p)
    with pytest.raises(ConfigError, match=r"^unknown tracker option 'max_age'; known: beta, ") as e:
        TrackerConfig.from_dict(d["track"])
    assert e.value.path == ("max_age",)
    assert locate(e.value, locs, "c.yaml", ("track",)).startswith("c.yaml:3: track.max_age: unknown tracker option")


def test_post_init_error_is_attributed_to_its_field(tmp_path):
    p = _write(tmp_path, "track:\n  max_age_s: 2\n  min_oks: 1.5\n")
    d, locs = load_yaml(p)
    with pytest.raises(ConfigError) as e:
        TrackerConfig.from_dict(d["track"])
    assert e.value.path == ("min_oks",)
    assert str(e.value) == "min_oks must be in [0, 1], got 1.5"      # the dataclass's own message
    assert locate(e.value, locs, "configs/x.yaml", ("track",)) == \
        "configs/x.yaml:3: track.min_oks: must be in [0, 1], got 1.5"
    # "a and b must ...": the first field, the whole message kept
    with pytest.raises(ConfigError) as e:
        TrackerConfig.from_dict({"min_cutoff": -1.0})
    assert e.value.path == ("min_cutoff",)
    assert locate(e.value, {}, "f.yaml") == "f.yaml: min_cutoff: min_cutoff and d_cutoff must be > 0 Hz, got -1.0, 0.3"
    with pytest.raises(ConfigError) as e:
        DecoderConfig.from_dict({"paf_samples": 1})
    assert e.value.path == ("paf_samples",) and e.value.detail == "must be >= 2, got 1"


def test_post_init_attribution_prefers_the_longest_field_name():
    @dataclass
    class Two:
        fps: float = 1.0
        fps_window: int = 2

        def __post_init__(self):
            if self.fps_window < 2:
                raise ValueError(f"fps_window must be >= 2, got {self.fps_window}")

    with pytest.raises(ConfigError) as e:
        from_section(Two, {"fps_window": 1}, "x")
    assert e.value.path == ("fps_window",)


@dataclass
class _Demo:
    n: int = 1
    x: float = 0.5
    name: str = "a"
    maybe: int | None = None
    label: str | None = None
    flag: bool = False
    opts: dict = field(default_factory=dict)
    items: list = field(default_factory=list)
    size: tuple[int, int] = (2, 3)
    stages: tuple[int, ...] | None = None
    anything: object = None

    def __post_init__(self):
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")
        if self.x > 100:
            raise ValueError("too large overall")


def test_optional_accepts_none_and_int_is_accepted_for_float():
    c = from_section(_Demo, {"maybe": None, "label": None, "x": 3, "stages": None}, "demo option")
    assert c.maybe is None and c.label is None and c.x == 3 and c.stages is None
    c = from_section(_Demo, {"maybe": 4, "label": "l", "x": 2.5, "stages": [1, 2, 3], "size": [4, 5],
                             "opts": {"a": 1}, "items": [1, "b"], "flag": True, "anything": [object()]}, "demo option")
    assert c.maybe == 4 and c.stages == [1, 2, 3] and c.size == [4, 5]
    assert TrackerConfig.from_dict({"max_age_s": 2}).max_age_s == 2
    assert LossConfig.from_dict({"okhm_stages": [4, 5], "stage_weights": [1, 2]}).stage_weights == (1.0, 2.0)
    assert AugmentConfig.from_dict({"scale_range": [0.5, 1.5]}).scale_range == (0.5, 1.5)


def test_conversions_that_keep_valid_configs_valid():
    c = from_section(_Demo, {"x": "1e-4", "n": 3.0}, "demo option")   # YAML 1.1 reads 1e-4 as a string
    assert c.x == 1e-4 and isinstance(c.x, float) and c.n == 3 and isinstance(c.n, int)
    assert TrackerConfig.from_dict({"beta": "5e-2"}).beta == 0.05


@pytest.mark.parametrize("key, value, expected", [
    ("n", True, "expected an integer, got True (bool)"),
    ("n", 2.5, "expected an integer, got 2.5 (float)"),
    ("n", "3", "expected an integer, got '3' (str)"),
    ("x", False, "expected a number, got False (bool)"),
    ("x", "high", "expected a number, got 'high' (str)"),
    ("x", None, "expected a number, got None (NoneType)"),
    ("name", 3, "expected a string, got 3 (int)"),
    ("maybe", "x", "expected an integer or null, got 'x' (str)"),
    ("maybe", True, "expected an integer or null, got True (bool)"),
    ("flag", "yes please", "expected true or false, got 'yes please' (str)"),
    ("flag", 1, "expected true or false, got 1 (int)"),
    ("opts", [1], "expected a mapping, got [1] (list)"),
    ("items", "a", "expected a list, got 'a' (str)"),
    ("size", [1, 2, 3], "expected a list of 2 integers, got [1, 2, 3] (list)"),
    ("size", [1, "b"], "expected a list of 2 integers, got [1, 'b'] (list)"),
    ("stages", [1, True], "expected a list of integers or null, got [1, True] (list)"),
])
def test_wrong_types_are_rejected(key, value, expected):
    with pytest.raises(ConfigError) as e:
        from_section(_Demo, {key: value}, "demo option")
    assert e.value.path == (key,)
    assert str(e.value) == f"demo option {key}: {expected}"
    assert e.value.detail == expected


def test_bool_is_rejected_for_int_in_real_configs():
    with pytest.raises(ConfigError, match="tracker option min_hits: expected an integer, got True"):
        TrackerConfig.from_dict({"min_hits": True})
    with pytest.raises(ConfigError, match="decoder option max_peaks: expected an integer"):
        DecoderConfig.from_dict({"max_peaks": False})


def test_post_init_error_without_a_field_has_an_empty_path():
    with pytest.raises(ConfigError) as e:
        from_section(_Demo, {"x": 1000}, "demo option")
    assert e.value.path == () and str(e.value) == "too large overall"
    assert locate(e.value, Locations({(): 1, ("demo",): 4}), "d.yaml", ("demo",)) == "d.yaml:4: demo: too large overall"
    with pytest.raises(ConfigError) as e:
        from_section(_Demo, {"n": -1}, "demo option")
    assert e.value.path == ("n",) and e.value.detail == "must be >= 0, got -1"


def test_section_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match=r"expected a mapping of demo options, got \[1, 2\] \(list\)"):
        from_section(_Demo, [1, 2], "demo option")
    assert from_section(_Demo, None, "demo option") == _Demo()


def test_config_error_carries_path_and_detail_and_locate_takes_any_error():
    e = ConfigError("demo option n: expected an integer", ("n",), "expected an integer")
    assert (str(e), e.path, e.detail) == ("demo option n: expected an integer", ("n",), "expected an integer")
    assert locate(ValueError("boom"), None, "a.yaml") == "a.yaml: boom"
    assert locate(e, {("s",): 3, ("s", "n"): 5}, "a.yaml", ("s",)) == "a.yaml:5: s.n: expected an integer"
