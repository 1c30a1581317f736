"""Environment report: versions, compiled CUDA arches vs the GPU present,
the spconv algorithm in use. ``python -m fuller.utils.collect_env``."""
import os
import subprocess
from collections import OrderedDict
from typing import Optional

import torch


def git_hash(short: bool = True) -> Optional[str]:
    """Commit of the fuller source tree, or None outside a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    cmd = ['git', '-C', root, 'rev-parse'] + (['--short'] if short else [])
    try:
        out = subprocess.run(cmd + ['HEAD'], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def collect_env() -> 'OrderedDict[str, str]':
    from mmengine.utils.dl_utils import collect_env as mmengine_env
    env = OrderedDict(mmengine_env())
    import fuller
    env['fuller'] = f'{fuller.__version__}+{git_hash() or "unknown"}'
    for name in ('mmcv', 'mmdet', 'mmdet3d', 'spconv', 'nuscenes', 'numpy',
                 'shapely'):
        try:
            mod = __import__(name)
            env[name] = getattr(mod, '__version__', 'installed')
        except ImportError:
            env[name] = 'not installed'
    try:
        from mmcv.ops import Voxelization  # noqa: F401
        env['mmcv ops'] = 'compiled'
    except ImportError as e:
        env['mmcv ops'] = f'missing ({e})'
    env['torch CUDA arch list'] = ' '.join(torch.cuda.get_arch_list()) or \
        'none (CPU build)'
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        arch = f'sm_{major}{minor}'
        ok = arch in torch.cuda.get_arch_list()
        env['GPU arch'] = f'{arch} ({"supported" if ok else "NOT compiled"})'
    env['spconv algorithm'] = ('Native on CPU (fuller.compat.set_spconv_algo)'
                               ', MaskImplicitGemm on CUDA')
    return env


if __name__ == '__main__':
    for k, v in collect_env().items():
        print(f'{k}: {v}')
