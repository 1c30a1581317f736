"""atomic_open: the target appears only complete; a failed write leaves
neither a partial target nor a temp file."""
import os

import pytest

from fuller.utils.io import atomic_open


def test_writes_and_replaces(tmp_path):
    path = tmp_path / 'sub' / 'out.json'
    with atomic_open(str(path)) as f:
        f.write('{"a": 1}')
    assert path.read_text() == '{"a": 1}'
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    with atomic_open(str(path), 'wb') as f:
        f.write(b'xyz')
    assert path.read_bytes() == b'xyz'
    assert os.listdir(path.parent) == ['out.json']


def test_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / 'out.txt'
    path.write_text('old')
    with pytest.raises(RuntimeError):
        with atomic_open(str(path)) as f:
            f.write('half')
            raise RuntimeError('interrupted')
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['out.txt']


def test_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match='mode'):
        with atomic_open(str(tmp_path / 'x'), 'a'):
            pass
