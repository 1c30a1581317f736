"""Config.pretty_text with fuller's memoised yapf call: the same text as
mmengine's own formatting, and yapf runs once per distinct config text."""
import mmengine.config.config as mmengine_config
import pytest
from mmengine.config import Config
from yapf.yapflib import yapf_api

from fuller.compat import memoise_config_formatting
from fuller.compat.config_formatting import memoised_format_code
from fuller.testing import REPO_ROOT

CONFIG = REPO_ROOT / 'configs' / 'fuller' / \
    'fuller_tiny-summag_1xb2-24e_synthetic-nus.py'


@pytest.fixture
def yapf_calls(monkeypatch):
    """Counts the real yapf calls (the memoised path included)."""
    calls = []
    real = yapf_api.FormatCode

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(yapf_api, 'FormatCode', counting)
    memoised_format_code.cache_clear()
    yield calls
    memoised_format_code.cache_clear()


def test_importing_fuller_installs_it():
    import fuller  # noqa: F401
    assert mmengine_config.FormatCode is memoised_format_code
    assert memoise_config_formatting() is memoised_format_code  # idempotent


def test_same_text_as_mmengine_and_yapf_runs_once(monkeypatch, yapf_calls):
    cfg = Config.fromfile(str(CONFIG))
    with monkeypatch.context() as m:   # mmengine's own path: plain yapf
        m.setattr(mmengine_config, 'FormatCode', yapf_api.FormatCode)
        expected = cfg.pretty_text
    assert len(yapf_calls) == 1
    memoise_config_formatting()
    first = cfg.pretty_text
    second = cfg.pretty_text
    assert first == expected and second == expected
    assert len(yapf_calls) == 2           # the first memoised call only
    assert 'grad_calibrator' in first and 'task_magnitude' in first
    # a changed config is a new text: formatted again, and correctly
    cfg.merge_from_dict({'train_cfg.max_epochs': 3})
    changed = cfg.pretty_text
    assert len(yapf_calls) == 3
    assert changed != expected and 'max_epochs=3' in changed


def test_yapf_errors_are_not_cached(yapf_calls):
    for _ in range(2):
        with pytest.raises(Exception):
            memoised_format_code('def (:\n', style_config=dict(
                based_on_style='pep8'))
    assert len(yapf_calls) == 2


def test_other_calls_go_straight_to_yapf(yapf_calls):
    for _ in range(2):
        text, _ = memoised_format_code('x  =  1\n', style_config='pep8')
        assert text == 'x = 1\n'
    assert len(yapf_calls) == 2
    assert memoised_format_code.cache_info().currsize == 0
