"""The configuration: the example documents every option at its default, and
mistakes are errors that name the option."""
import dataclasses
from pathlib import Path

import pytest

from providers import config

EXAMPLE = Path(__file__).resolve().parent.parent / "conf" / "coffer.example.toml"


def test_example_holds_every_option_at_its_default():
    cfg = config.load(EXAMPLE)
    default = config.from_dict({}, base_dir=cfg.base_dir)
    assert cfg == default
    import tomllib
    raw = tomllib.loads(EXAMPLE.read_text())
    for f in dataclasses.fields(config.Config):
        if f.name == "base_dir":
            continue
        section = getattr(default, f.name)
        assert set(raw[f.name]) == {x.name for x in dataclasses.fields(section)}, f.name


@pytest.mark.parametrize("raw,words", [
    ({"storage": {"chunksize": 1}}, "chunksize"),
    ({"nosuch": {}}, "nosuch"),
    ({"webdav": {"port": "80"}}, "port"),
    ({"security": {"default_mode": "open"}}, "default_mode"),
    ({"storage": {"chunk_size": 10}}, "chunk_size"),
    ({"accounts": {"default_plan": "gold"}}, "gold"),
    ({"storage": {"gc_grace_seconds": 60}}, "gc_grace_seconds"),
    ({"storage": {"gc_every_hours": -1}}, "gc_every_hours"),
    ({"security": {"login_safe_networks": ["office"]}}, "login_safe_networks"),
    ({"security": {"login_block_max_seconds": 60}}, "login_block_max_seconds"),
    ({"security": {"login_failures_before_delay": 0}}, "login_failures_before_delay"),
    ({"mail": {"public_url": "http://files.example.org"}}, "public_url"),      # unsubscribe links: HTTPS only
    ({"mail": {"public_url": "https://files.example.org/?x=1"}}, "public_url"),
])
def test_mistakes_name_the_option(raw, words):
    with pytest.raises(config.ConfigError) as e:
        config.from_dict(raw)
    assert words in str(e.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[storage\n")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(bad)


def test_relative_paths_follow_the_config_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[storage]\ndata_dir = "data"\n')
    cfg = config.load(f)
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.database_url == f"sqlite:///{tmp_path / 'data' / 'coffer.db'}"
