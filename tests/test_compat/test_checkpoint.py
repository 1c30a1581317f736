"""A checkpoint written by tools/train.py reloads under torch 2.13
(weights_only=True by default) through fuller's explicit allow-list, and the
training tool resumes from it."""
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from fuller.testing import REPO_ROOT

TOY_MODULE = '''
import torch
from torch import nn
from mmengine.model import BaseModel
from mmengine.dataset import BaseDataset
from mmdet3d.registry import DATASETS, MODELS


@MODELS.register_module()
class ToyRegressor(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor', sample_idx=None):
        pred = self.fc(inputs)
        if mode == 'loss':
            return dict(loss=((pred - data_samples) ** 2).mean())
        return pred


@DATASETS.register_module()
class ToyDataset(BaseDataset):
    def __init__(self):
        super().__init__(serialize_data=False, lazy_init=False)

    def load_data_list(self):
        xs = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
        return [dict(inputs=x, data_samples=x.sum(0, keepdim=True)) for x in xs]
'''

TOY_CONFIG = '''
custom_imports = dict(imports=['fuller', 'toy_fuller_model'], allow_failed_imports=False)
default_scope = 'mmdet3d'
model = dict(type='ToyRegressor')
train_dataloader = dict(batch_size=4, num_workers=0,
                        sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(type='ToyDataset'), collate_fn=dict(type='default_collate'))
train_cfg = dict(by_epoch=True, max_epochs={max_epochs})
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9))
param_scheduler = [dict(type='MultiStepLR', milestones=[1], by_epoch=True)]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1),
                     logger=dict(type='LoggerHook', interval=1))
custom_hooks = [dict(type='RunMetaHook')]
auto_scale_lr = dict(enable=False, base_batch_size=4)
randomness = dict(seed=0)
'''


def run_train(tmp_path, max_epochs, *extra):
    cfg = tmp_path / f'toy_{max_epochs}e.py'
    cfg.write_text(textwrap.dedent(TOY_CONFIG.format(max_epochs=max_epochs)))
    env = {'PYTHONPATH': f'{tmp_path}:{REPO_ROOT}', 'PATH': '/usr/bin:/bin',
           'PYTHONWARNINGS': 'ignore'}
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / 'tools' / 'train.py'), str(cfg),
         '--work-dir', str(tmp_path / 'work'), *extra],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp('ckpt')
    (tmp_path / 'toy_fuller_model.py').write_text(TOY_MODULE)
    run_train(tmp_path, 2)
    return tmp_path


def test_plain_weights_only_load_fails_without_allow_list(trained):
    """The trap is real: a fresh interpreter without fuller cannot load it."""
    ckpt = trained / 'work' / 'epoch_2.pth'
    code = ('import torch, sys\n'
            'try:\n'
            f'    torch.load({str(ckpt)!r})\n'
            'except Exception as e:\n'
            '    print(type(e).__name__); sys.exit(0)\n'
            'sys.exit(3)\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and 'UnpicklingError' in proc.stdout


def test_checkpoint_loads_with_weights_only(trained):
    import fuller  # noqa: F401  registers the allow-list
    ckpt = torch.load(trained / 'work' / 'epoch_2.pth', weights_only=True)
    assert ckpt['meta']['epoch'] == 2
    assert set(ckpt['state_dict']) == {'fc.weight', 'fc.bias'}
    scalars = ckpt['message_hub']['log_scalars']
    assert 'train/loss' in scalars
    # the HistoryBuffer came back with its statistics methods intact
    assert scalars['train/loss'].mean() == pytest.approx(
        float(scalars['train/loss'].data[0].mean()))
    run_meta = ckpt['meta']['fuller']
    assert run_meta['effective_batch_size'] == 4
    assert run_meta['world_size'] == 1


def test_allow_list_still_rejects_other_globals(tmp_path):
    import fuller  # noqa: F401
    path = tmp_path / 'evil.pth'
    torch.save({'payload': subprocess.Popen}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    # the name builtins.getattr only resolves HistoryBuffer statistics
    from mmengine.logging.history_buffer import HistoryBuffer

    from fuller.compat.checkpoint import history_buffer_getattr
    assert history_buffer_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    for owner, name in ((torch, 'load'), (HistoryBuffer, '__init__'),
                        (HistoryBuffer, 'update')):
        with pytest.raises(pickle.UnpicklingError):
            history_buffer_getattr(owner, name)


def test_train_tool_resumes_from_last_checkpoint(trained):
    out = run_train(trained, 3, '--resume')
    assert 'resumed epoch: 2' in out.replace(',', '')
    assert (trained / 'work' / 'epoch_3.pth').exists()
    import fuller  # noqa: F401
    ckpt = torch.load(trained / 'work' / 'epoch_3.pth', weights_only=True)
    assert ckpt['meta']['epoch'] == 3
