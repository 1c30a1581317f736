"""Run yapf once per distinct config text in ``Config.pretty_text``.

mmengine 0.10.7 rebuilds ``Config.pretty_text`` on every access and formats
it with yapf's ``FormatCode``: about 2.7 s for fuller's tiny configs on one
core, and one training process reads it six times (the config log,
``Config.dump``, each vis backend) for the same config. ``FormatCode`` is a
pure function of its arguments, so we replace the ``FormatCode`` name that
``mmengine.config.config`` looks up with a version that memoises its result
by (unformatted text, style). The output is exactly yapf's; a text that yapf
rejects raises every time (errors are not cached).
"""
import functools
from typing import Callable, Optional, Tuple

import mmengine.config.config as mmengine_config
from yapf.yapflib import yapf_api

_CACHE_SIZE = 16                # distinct config texts kept, ~50 kB each
_MEMOISED = '_fuller_memoised'  # marks our wrapper on the patched name


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _format_once(text: str, style: Tuple[Tuple[str, object], ...],
                 verify: Optional[bool]) -> Tuple[str, bool]:
    kwargs = {} if verify is None else dict(verify=verify)
    return yapf_api.FormatCode(text, style_config=dict(style), **kwargs)


def _style_key(style_config) -> Optional[Tuple[Tuple[str, object], ...]]:
    """A hashable key for a dict style, None when it cannot be cached."""
    if not isinstance(style_config, dict):
        return None
    key = tuple(sorted(style_config.items()))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def memoised_format_code(unformatted_source, style_config=None, **kwargs):
    """``yapf_api.FormatCode`` with its result cached for the arguments
    mmengine passes (a dict style and optionally ``verify``); any other call
    goes straight to yapf."""
    key = _style_key(style_config)
    extra = set(kwargs) - {'verify'}
    if key is None or extra or not isinstance(unformatted_source, str):
        return yapf_api.FormatCode(unformatted_source,
                                   style_config=style_config, **kwargs)
    return _format_once(unformatted_source, key, kwargs.get('verify'))


setattr(memoised_format_code, _MEMOISED, True)
memoised_format_code.cache_clear = _format_once.cache_clear
memoised_format_code.cache_info = _format_once.cache_info


def memoise_config_formatting() -> Callable:
    """Make ``mmengine.config.Config.pretty_text`` format each distinct text
    once per process. Idempotent; returns the function now in place."""
    current = mmengine_config.FormatCode
    if not getattr(current, _MEMOISED, False):
        mmengine_config.FormatCode = memoised_format_code
    return mmengine_config.FormatCode
