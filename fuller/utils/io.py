"""Atomic file writes: a reader (or a resumed run) never sees a partial file.

The content goes to a temp file ``.<name>.<random>.tmp`` beside the target,
which is moved into place with ``os.replace`` only after the write succeeded;
on any error the temp file is removed and the target is left untouched.
"""
import os
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_open(path: str, mode: str = 'w'):
    """``with atomic_open(path, 'wb') as f: ...`` writes ``path`` atomically.

    Parent folders are created. The file gets the usual 0o644 permissions
    (mkstemp alone would leave 0o600).
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f'atomic_open({path!r}): mode must be w or wb')
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory,
                               prefix='.' + os.path.basename(path) + '.',
                               suffix='.tmp')
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
