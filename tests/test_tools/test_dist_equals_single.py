"""Two gloo ranks fed by mmengine's sampler train like one process fed their
global batches, step by step, with the config's AdamW.

The tiny multi-task model of configs/fuller/fuller_tiny_1xb2-24e_synthetic-nus.py
(FULLER's IMTL-G task weights and modality calibration, active from the first
step; the config's AdamW, lr 2e-3, weight decay 0.01, gradient clipping at 35)
is built once and its initial weights written to a file.

* One process: STEPS steps of ``model.train_step`` on the global batches the
  sampler should form (below), loaded through the dataset's training pipeline.
  Before each step it saves the model's and the optimiser's state.
* Two processes (spawned by ``fuller.testing.run_ranks`` on a free port, gloo),
  each wrapped as ``tools/train.py`` wraps a launched CPU run with ``sync_bn``
  set (``setup_cpu_distributed`` -> ``CPUSyncBNDistributedDataParallel``:
  every batch norm a ``CPUSyncBatchNorm``), load their data as the Runner
  does (``Runner.build_dataloader``: the config's ``DefaultSampler`` with
  ``shuffle=True``, one sample per rank and step) from a training split of
  NUM_SAMPLES = 3 samples, an odd size. Before step k each rank loads the
  single process's state before step k (weights and AdamW's moments), so every
  step is compared from the same starting point.

The sharding expected of mmengine's sampler, written out: it shuffles the
indices with a generator seeded by (seed + epoch), the same on every rank and
in one process, repeats the first ones until the length divides by the world
size, and gives rank r the positions r, r + 2, ...: for the permutation
(a, b, c), rank 0 loads [a, c] and rank 1 [b, a] (a padded duplicate), and the
global batches are [a, b] and [c, a].

Set aside, because they are not distribution:

* the order of steps: each step starts from the single process's state, since
  AdamW turns rounding noise into whole steps (below) and a free-running
  comparison would measure that amplification, not the distributed step;
* random augmentation: its draws depend on how many samples a process loaded
  before, which differs by construction; each sample's draws are seeded with
  its dataset index in both set-ups (the config's training pipeline is kept);
* dropout: it draws different masks for a batch of 2 and two batches of 1; it
  is switched off;
* the learning-rate schedule: not stepped (both train at the config's base lr);
* ties among equally good Hungarian matchings (the centre cost is an L1
  distance, the class costs of an untrained head are all alike), which
  rounding breaks differently for a batch of 2 and two batches of 1: the
  single process records its matchings; each rank pairs its queries with the
  recorded ones by cost row (rows within 1e-3), checks that the recorded
  matching is optimal for its own costs (within MATCH_GAP of its own optimum)
  and uses it.

Expected, for each step (measured on 2 loaded cores, one thread a process,
worst over both steps):

* each loss that ``train_step`` returns for the logger: the single process's
  equals the mean over the ranks to rel LOSS_RTOL (measured 4e-7). mmengine
  logs rank 0's own value (``BaseModel.parse_losses`` does not reduce across
  ranks), so a launched run logs rank 0's share, not the global batch's loss;
  the heads normalise by ``reduce_mean`` of their positive counts and the
  segmentation loss is a mean over equally many pixels per sample, so the mean
  over ranks is the global batch's loss;
* the gradient AdamW receives (after DDP's all-reduce and the clipping): the
  same on both ranks, bit for bit, and per parameter tensor within GRAD_RTOL of
  the single process's (relative L2 distance; measured: heads 1e-4, BEV
  decoder and fuser 9.5e-4, image branch 1.8e-3, sparse encoder 4.4e-3).
  Tensors whose gradient is zero but for rounding (norm < NOISE_GRAD in one
  process: biases before a norm layer, residual branches behind a
  zero-initialised batch-norm scale; measured up to 1.5e-8, while the
  smallest real gradient norm was 8.8e-7) must be so in both;
* the weights after the AdamW step: identical on both ranks (DDP); per trained
  tensor the update within UPDATE_RTOL of the single process's (measured
  0.052); no element further apart than MAX_WEIGHT_DIFF x lr, and fewer than
  MAX_FAR_FRACTION of all elements further apart than FAR x lr (measured 344
  and 84 of 11.6 million). AdamW's first update is about lr x sign(g) per
  element: an element whose gradient lies within rounding of zero moves by
  +-lr in either set-up, so a few elements differ by up to 2 lr even though
  the gradients agree.

For scale, one process given the same global batches with the two samples
swapped, from the same states, differs from itself by 2.7e-3 and 3.5e-3
(gradients) and in 252 and 129 elements by more than 0.1 lr: the two ranks
are within the single process's own rounding noise. A rank whose gradient is
scaled by 1.5 fails the gradient check (0.44); unsynchronised batch norms
fail the matching and loss checks; a wrong shard fails the index check.
"""
import contextlib
import os
import random

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from fuller.testing import REPO_ROOT, one_thread, quiet_init_weights, run_ranks

CONFIG = REPO_ROOT / 'configs' / 'fuller' / 'fuller_tiny_1xb2-24e_synthetic-nus.py'
WORLD = 2
NUM_SAMPLES = 3           # odd: 2 ranks x 2 steps = 4 positions, one padded duplicate
STEPS = 2                 # ceil(NUM_SAMPLES / WORLD) steps of one sample per rank
SEED = 0
MATCH_GAP = 1e-4          # replayed matching vs the rank's own optimum (cost units)
LOSS_RTOL = 1e-5          # measured 4e-7
GRAD_RTOL = 1e-2          # measured 4.4e-3 (one process, samples swapped: 3.5e-3)
NOISE_GRAD = 1e-7         # rounding-only gradient norms: <= 1.5e-8; real ones >= 8.8e-7
UPDATE_RTOL = 0.1         # measured 0.052
MAX_WEIGHT_DIFF = 2.5     # x lr; measured 2.0 (two opposite first steps)
FAR = 0.1                 # x lr
MAX_FAR_FRACTION = 1e-4   # measured 3.0e-5 (step 1), 7.2e-6 (step 2)


def _config(dataroot):
    from mmengine.registry import init_default_scope

    import fuller  # noqa: F401  (registers the modules)
    from fuller.utils.config_utils import load_config, set_data_root
    init_default_scope('mmdet3d')
    cfg = load_config(str(CONFIG))
    cfg.model.det_head.dropout = 0.0  # the model's one random op
    set_data_root(cfg, str(dataroot))
    cfg.train_dataloader.dataset.indices = NUM_SAMPLES  # mmengine's BaseDataset: the first 3
    return cfg


def _build(cfg, weights_file):
    """The model with the saved weights."""
    from fuller.compat.spconv_algo import set_spconv_algo
    from mmdet3d.registry import MODELS
    model = MODELS.build(cfg.model)
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    set_spconv_algo(model, 'cpu')
    model.train()
    return model


@contextlib.contextmanager
def _augmentation_seeded_by_index(loaded):
    """Seeds Python's, NumPy's and torch's generators with (SEED, index)
    around each ``prepare_data(index)`` of the dataset class and appends the
    index to ``loaded`` (a sample without boxes would make mmengine draw
    another index: ``loaded`` shows it)."""
    from fuller.datasets.nuscenes_multitask_dataset import \
        NuScenesMultiTaskDataset as dataset_cls
    original = dataset_cls.prepare_data
    own = 'prepare_data' in vars(dataset_cls)

    def prepare_data(self, idx):
        loaded.append(int(idx))
        np_state, py_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            np.random.seed([SEED, int(idx)])
            random.seed(f'{SEED}-{idx}')
            torch.manual_seed(SEED * 1000 + int(idx))
            try:
                return original(self, idx)
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)
    dataset_cls.prepare_data = prepare_data
    try:
        yield
    finally:
        if own:
            dataset_cls.prepare_data = original
        else:
            del dataset_cls.prepare_data


class _MatchingLog:
    """Patches the detection head's matching: 'record' keeps every cost matrix
    and matching (calls: step-major, sample-minor), 'replay' makes the k-th
    call of a step use the matching ``recorded[k][step]``.
    Queries are identified by their cost rows, since tied heatmap peaks may
    come out of top-k in another order; ``worst_gap`` is how much worse the
    replayed matching is than the process's own on its own costs, and
    ``worst_row`` the largest distance between paired cost rows."""

    def __init__(self, mode, recorded=None):
        from fuller.models.task_modules import hungarian_assigner_3d as m
        self.mode, self.recorded = mode, recorded if recorded is not None else []
        self.calls = 0
        self.worst_gap = self.worst_row = 0.0
        self._module = m
        self._orig = m.QueryHungarianAssigner3D.assign_from_cost
        log = self

        def assign_from_cost(cost, gt_labels):
            return log(cost, gt_labels)
        m.QueryHungarianAssigner3D.assign_from_cost = staticmethod(assign_from_cost)

    def restore(self):
        self._module.QueryHungarianAssigner3D.assign_from_cost = staticmethod(self._orig)

    def __call__(self, cost, gt_labels):
        if self.mode == 'record':
            result = self._orig(cost, gt_labels)
            self.recorded.append((cost.clone(), result.gt_inds.clone()))
            return result
        step, k = divmod(self.calls, len(self.recorded))
        rec_cost, rec_inds = self.recorded[k][step]
        self.calls += 1
        dist_rows = torch.cdist(cost.double(), rec_cost.double())     # (P, P)
        # one-to-one: queries with equal predictions have equal cost rows
        rows, pair = linear_sum_assignment(dist_rows.numpy())
        pair = torch.as_tensor(pair)
        self.worst_row = max(self.worst_row, float(dist_rows[rows, pair].max()))
        gt_inds = rec_inds[pair]
        own = self._orig(cost, gt_labels).gt_inds
        self.worst_gap = max(self.worst_gap,
                             _matching_cost(cost, gt_inds) - _matching_cost(cost, own))
        from mmdet.models.task_modules.assigners import AssignResult
        labels = gt_inds.new_full(gt_inds.shape, -1)
        matched = gt_inds > 0
        labels[matched] = gt_labels.long()[gt_inds[matched] - 1]
        return AssignResult(cost.shape[1], gt_inds.clone(), None, labels=labels)


def _matching_cost(cost, gt_inds) -> float:
    rows = (gt_inds > 0).nonzero().flatten()
    return float(cost[rows, gt_inds[rows] - 1].double().sum())


def _train(model, module, cfg, batches, before=None):
    """``train_step`` on each batch with the config's optimiser wrapper
    (AdamW, clipping). ``before[k]`` (model and optimiser state) is loaded
    before step k when given. Returns, for each step, the state the step
    started from, the losses, the gradient the optimiser received (by
    parameter name) and the weights after the step."""
    import copy

    from mmengine.optim import build_optim_wrapper
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    steps = []

    def keep_grads(optimizer, args, kwargs):
        steps[-1]['grads'] = {n: p.grad.detach().clone()
                              for n, p in module.named_parameters() if p.grad is not None}
    handle = optim.optimizer.register_step_pre_hook(keep_grads)
    for k, batch in enumerate(batches):
        if before is not None:
            module.load_state_dict(before[k]['model'])
            optim.load_state_dict(before[k]['optim'])
        steps.append(dict(before=dict(model=copy.deepcopy(module.state_dict()),
                                      optim=copy.deepcopy(optim.state_dict()))))
        log_vars = model.train_step(batch, optim_wrapper=optim)
        steps[-1]['losses'] = {k: float(v.detach()) for k, v in log_vars.items()}
        steps[-1]['after'] = copy.deepcopy(module.state_dict())
    handle.remove()
    return steps


def _worker(rank, tmp, dataroot):
    """One launched rank; ``run_ranks`` has set the launcher's environment."""
    from mmengine.registry import MODEL_WRAPPERS
    from mmengine.runner import Runner

    from fuller.utils.dist import setup_cpu_distributed
    torch.set_num_threads(1)
    cfg = _config(dataroot)
    cfg.launcher = 'pytorch'
    cfg.sync_bn = 'torch'
    assert setup_cpu_distributed(cfg)  # what tools/train.py does on a CPU launch
    assert cfg.model_wrapper_cfg.type == 'CPUSyncBNDistributedDataParallel'
    single = torch.load(os.path.join(tmp, 'single.pth'), weights_only=True)
    model = _build(cfg, os.path.join(tmp, 'weights.pth'))
    ddp = MODEL_WRAPPERS.build(cfg.model_wrapper_cfg, default_args=dict(module=model))
    cfg.train_dataloader.batch_size = 1  # a global batch of 2, as the single process's
    loaded = []
    with _augmentation_seeded_by_index(loaded):
        loader = Runner.build_dataloader(cfg.train_dataloader, seed=SEED)
        recorded = single['matching']  # step-major, sample-minor; sample r is rank r's
        matching = _MatchingLog('replay', [[recorded[step * WORLD + rank]
                                            for step in range(STEPS)]])
        try:
            steps = _train(ddp, model, cfg, loader, before=single['before'])
        finally:
            matching.restore()
    for step in steps:
        del step['before']
    torch.save(dict(steps=steps, loaded=loaded, sampler=type(loader.sampler).__name__,
                    dataset_len=len(loader.dataset), calls=matching.calls,
                    worst_gap=matching.worst_gap, worst_row=matching.worst_row,
                    sync_bn=sum(type(m).__name__ == 'CPUSyncBatchNorm'
                                for m in model.modules())),
               os.path.join(tmp, f'rank{rank}.pth'))


def test_two_ranks_equal_one_process(synthetic_dataroot, tmp_path):
    from mmdet3d.registry import DATASETS, MODELS
    from mmengine.dataset import DefaultSampler, pseudo_collate
    cfg = _config(synthetic_dataroot)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    with one_thread():
        model = MODELS.build(cfg.model)
        quiet_init_weights(model)
    torch.save(model.state_dict(), tmp_path / 'weights.pth')

    # The sharding expected of mmengine's sampler on 2 ranks: the permutation
    # (a, b, c) it draws (seeded with seed + epoch, the same on every rank and
    # in one process), padded to 4 with its first index; rank 0 takes positions
    # 0 and 2, rank 1 positions 1 and 3.
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(dataset) == NUM_SAMPLES
    a, b, c = DefaultSampler(dataset, shuffle=True, seed=SEED)
    assert sorted([a, b, c]) == list(range(NUM_SAMPLES))
    shards = [[a, c], [b, a]]
    global_batches = [[shards[0][k], shards[1][k]] for k in range(STEPS)]

    loaded = []
    with one_thread(), _augmentation_seeded_by_index(loaded):
        batches = [pseudo_collate([dataset[i] for i in pair]) for pair in global_batches]
        assert loaded == [i for pair in global_batches for i in pair]
        for batch in batches:  # every sample carries boxes: the detection losses are not trivial
            for sample in batch['data_samples']:
                assert len(sample.gt_instances_3d.labels_3d) > 0
        model = _build(cfg, tmp_path / 'weights.pth')
        matching = _MatchingLog('record')
        try:
            single = _train(model, model, cfg, batches)
        finally:
            matching.restore()
    assert len(matching.recorded) == STEPS * WORLD  # one decoder layer: one matching a sample
    torch.save(dict(before=[step['before'] for step in single], matching=matching.recorded),
               tmp_path / 'single.pth')

    run_ranks(_worker, args=(str(tmp_path), str(synthetic_dataroot)), world_size=WORLD,
              backend=None, timeout_s=900)
    ranks = [torch.load(tmp_path / f'rank{r}.pth', weights_only=True) for r in range(WORLD)]
    for rank, shard in zip(ranks, shards):
        assert rank['sampler'] == 'DefaultSampler' and rank['dataset_len'] == NUM_SAMPLES
        assert rank['loaded'] == shard  # the padded duplicate included
        assert rank['calls'] == STEPS
        assert rank['worst_row'] < 1e-3  # each query's costs are the single process's
        assert rank['worst_gap'] < MATCH_GAP  # the replayed matchings are ties, not other choices
        assert rank['sync_bn'] > 10      # the model's batch norms were synchronised

    lr = cfg.optim_wrapper.optimizer.lr
    for k, want in enumerate(single):
        got = [rank['steps'][k] for rank in ranks]
        # Losses of the step, as train_step returns them for the logger.
        assert set(want['losses']) == set(got[0]['losses'])
        for key, value in want['losses'].items():
            mean = sum(g['losses'][key] for g in got) / WORLD
            assert mean == pytest.approx(value, rel=LOSS_RTOL), (k, key)
        # the ranks' own losses differ (different samples): the comparison is not vacuous
        assert got[0]['losses']['loss'] != pytest.approx(got[1]['losses']['loss'], rel=1e-2)

        # The gradient AdamW received: all-reduced (the same on both ranks) and
        # the single process's, per parameter tensor.
        assert set(want['grads']) == set(got[0]['grads'])
        noise_only = []
        for name, g in want['grads'].items():
            d = got[0]['grads'][name]
            torch.testing.assert_close(got[1]['grads'][name], d, rtol=0, atol=0)
            # zero but for rounding: a bias before a norm layer, a residual branch
            # behind a zero-initialised batch-norm scale
            if g.norm() < NOISE_GRAD:
                assert d.norm() < NOISE_GRAD, (k, name)
                noise_only.append(name)
                continue
            apart = float((d.double() - g.double()).norm() / g.double().norm())
            assert apart < GRAD_RTOL, (k, name, apart)
        assert len(noise_only) < 0.5 * len(want['grads']), noise_only

        # The weights after the AdamW step.
        torch.testing.assert_close(got[0]['after'], got[1]['after'], rtol=0, atol=0)  # DDP
        far = total = 0
        for name, value in want['after'].items():
            dist_value = got[0]['after'][name]
            if not value.is_floating_point():  # num_batches_tracked
                assert torch.equal(dist_value, value), name
                continue
            diff = (dist_value.double() - value.double()).abs()
            assert float(diff.max()) < MAX_WEIGHT_DIFF * lr, (k, name, float(diff.max()) / lr)
            far += int((diff > FAR * lr).sum())
            total += value.numel()
            if name in noise_only or name not in want['grads']:
                continue  # buffers and untrained tensors: only the bound above
            before = want['before']['model'][name].double()
            moved = value.double() - before
            apart = float(((dist_value.double() - before) - moved).norm() / moved.norm())
            assert apart < UPDATE_RTOL, (k, name, apart)
        assert far < MAX_FAR_FRACTION * total, (k, far, total)
