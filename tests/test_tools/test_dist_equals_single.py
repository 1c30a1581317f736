"""Two gloo ranks with one sample each train like one process with both samples.

The tiny multi-task model of configs/fuller/fuller_tiny_1xb2-24e_synthetic-nus.py (FULLER:
IMTL-G task weights and modality calibration, gradient clipping) is built once; its
initial weights and a fixed batch of two augmented training samples of the generated dataroot
are written to files, so both set-ups see identical weights and data. For a few steps:

* one process: ``model.train_step`` on both samples;
* two processes (spawned, gloo): rank r trains on sample r, wrapped as ``tools/train.py`` wraps
  a launched CPU run with ``sync_bn`` set (``setup_cpu_distributed`` ->
  ``CPUSyncBNDistributedDataParallel``: every batch norm a ``CPUSyncBatchNorm``).

Two sources of difference are not distribution and are taken out:

* dropout draws different masks in the two set-ups: it is switched off;
* AdamW turns rounding noise in near-zero gradient elements into +-lr steps: SGD with momentum
  is used instead;
* the Hungarian matching of queries to boxes has many exactly tied optima (its centre cost is
  an L1 distance, and the class costs of an untrained head are all alike), and float rounding
  that differs between a batch of 2 and two batches of 1 (~1e-6) picks a different one. The
  single process records each matching; the ranks pair their queries with the recorded ones
  by cost row, check that the recorded matching is optimal for their own cost matrix (within
  1e-4 of their own optimum) and use it.

Expected: each loss of the single process equals the mean over ranks of that loss (the heads
normalise by ``reduce_mean`` of their positive counts, the segmentation loss is a mean over
equally many pixels per sample), the ranks' weights are identical and they agree with the
single process's within float tolerance after the last step.
"""
import os
import pickle

import numpy as np
import pytest
import torch

from fuller.testing import run_ranks
from tests.conftest import REPO_ROOT

CONFIG = REPO_ROOT / 'configs' / 'fuller' / 'fuller_tiny_1xb2-24e_synthetic-nus.py'
WORLD = 2
STEPS = 3


def _config(dataroot=None):
    from mmengine.registry import init_default_scope

    import fuller  # noqa: F401  (registers the modules)
    from fuller.utils.config_utils import load_config, set_data_root
    init_default_scope('mmdet3d')
    cfg = load_config(str(CONFIG))
    # Dropout draws different masks in the two set-ups (one sample per rank vs two in one
    # process), which no synchronisation can match: it is the one random op of the model.
    cfg.model.det_head.dropout = 0.0
    # AdamW's first steps are lr * g / (|g| + eps) per element: an element whose gradient is a
    # sum that cancels to rounding noise moves by +-lr on a sign flip. SGD's step is linear in
    # the gradient, so agreeing weights mean agreeing gradients (the clipping is kept).
    cfg.optim_wrapper.optimizer = dict(type='SGD', lr=0.02, momentum=0.9)
    if dataroot is not None:
        set_data_root(cfg, str(dataroot))
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


class _MatchingLog:
    """Patches the detection head's matching: 'record' keeps every cost matrix
    and matching of the single process, 'replay' makes rank r use the single
    process's matching of its sample r (calls: step-major, sample-minor;
    ``slots`` names the recorded sample of each call within a step).
    Queries are identified by their cost rows, since tied heatmap peaks may
    come out of top-k in another order; ``worst_gap`` is how much worse the
    replayed matching is than the rank's own on the rank's costs, and
    ``worst_row`` the largest distance between paired cost rows."""

    def __init__(self, mode, recorded=None, slots=(0, )):
        from fuller.models.task_modules import hungarian_assigner_3d as m
        self.mode, self.recorded, self.slots = mode, recorded or [], list(slots)
        self.calls = 0
        self.worst_gap = self.worst_row = 0.0
        self._orig = m.QueryHungarianAssigner3D.assign_from_cost
        log = self

        def assign_from_cost(cost, gt_labels):
            return log(cost, gt_labels)
        m.QueryHungarianAssigner3D.assign_from_cost = staticmethod(assign_from_cost)

    def __call__(self, cost, gt_labels):
        if self.mode == 'record':
            result = self._orig(cost, gt_labels)
            self.recorded.append((cost.clone(), result.gt_inds.clone()))
            return result
        step, k = divmod(self.calls, len(self.slots))
        rec_cost, rec_inds = self.recorded[step * WORLD + self.slots[k]]
        self.calls += 1
        dist_rows = torch.cdist(cost.double(), rec_cost.double())     # (P, P)
        pair = dist_rows.argmin(dim=1)
        assert len(set(pair.tolist())) == len(pair), 'cost rows do not pair up'
        self.worst_row = max(self.worst_row, float(dist_rows.min(dim=1).values.max()))
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


def _train(model, optim_model, cfg, batch):
    from mmengine.optim import build_optim_wrapper
    optim = build_optim_wrapper(optim_model, cfg.optim_wrapper)
    losses = []
    for _ in range(STEPS):
        log_vars = model.train_step(batch, optim_wrapper=optim)
        losses.append({k: float(v) for k, v in log_vars.items()})
    return losses


def _worker(rank, tmp):
    """One launched rank; ``run_ranks`` has set the launcher's environment."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import MODEL_WRAPPERS

    from fuller.utils.dist import setup_cpu_distributed
    torch.set_num_threads(1)
    cfg = _config()
    cfg.launcher = 'pytorch'
    cfg.sync_bn = 'torch'
    assert setup_cpu_distributed(cfg)  # what tools/train.py does on a CPU launch
    assert cfg.model_wrapper_cfg.type == 'CPUSyncBNDistributedDataParallel'
    model = _build(cfg, os.path.join(tmp, 'weights.pth'))
    ddp = MODEL_WRAPPERS.build(cfg.model_wrapper_cfg, default_args=dict(module=model))
    matching = _MatchingLog('replay', torch.load(os.path.join(tmp, 'matching.pth')), [rank])
    with open(os.path.join(tmp, 'samples.pkl'), 'rb') as f:
        samples = pickle.load(f)
    losses = _train(ddp, ddp, cfg, pseudo_collate([samples[rank]]))
    torch.save(dict(losses=losses, state=model.state_dict(), calls=matching.calls,
                    worst_gap=matching.worst_gap, worst_row=matching.worst_row,
                    sync_bn=sum(type(m).__name__ == 'CPUSyncBatchNorm'
                                for m in model.modules())),
               os.path.join(tmp, f'rank{rank}.pth'))


@pytest.fixture(scope='module')
def inputs(synthetic_dataroot, tmp_path_factory):
    """Initial weights and two augmented training samples, in files."""
    from mmdet3d.registry import DATASETS, MODELS
    tmp = tmp_path_factory.mktemp('dist_single')
    cfg = _config(synthetic_dataroot)
    torch.manual_seed(0)
    np.random.seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save(model.state_dict(), tmp / 'weights.pth')
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    samples = [dataset[0], dataset[1]]
    for sample in samples:  # both samples carry boxes: the detection losses are not trivial
        assert len(sample['data_samples'].gt_instances_3d.labels_3d) > 0
    with open(tmp / 'samples.pkl', 'wb') as f:
        pickle.dump(samples, f)
    return tmp, cfg, samples


def test_two_ranks_equal_one_process(inputs):
    from mmengine.dataset import pseudo_collate
    tmp, cfg, samples = inputs
    torch.set_num_threads(1)
    model = _build(cfg, tmp / 'weights.pth')
    matching = _MatchingLog('record')
    try:
        single = _train(model, model, cfg, pseudo_collate(samples))
    finally:
        from fuller.models.task_modules import hungarian_assigner_3d as m
        m.QueryHungarianAssigner3D.assign_from_cost = staticmethod(matching._orig)
    assert len(matching.recorded) == STEPS * WORLD  # one decoder layer: one matching a sample
    torch.save(matching.recorded, tmp / 'matching.pth')

    # The rounding noise of one process: the same two samples in the other order.
    reordered = _build(cfg, tmp / 'weights.pth')
    replay = _MatchingLog('replay', matching.recorded, slots=[1, 0])
    try:
        _train(reordered, reordered, cfg, pseudo_collate(samples[::-1]))
    finally:
        from fuller.models.task_modules import hungarian_assigner_3d as m
        m.QueryHungarianAssigner3D.assign_from_cost = staticmethod(matching._orig)
    assert replay.worst_gap < 1e-4
    noise = reordered.state_dict()

    run_ranks(_worker, args=(str(tmp), ), world_size=WORLD, backend=None, timeout_s=900)
    ranks = [torch.load(tmp / f'rank{r}.pth', weights_only=True) for r in range(WORLD)]
    for rank in ranks:
        assert rank['calls'] == STEPS
        assert rank['worst_row'] < 1e-3  # each query's costs are the single process's
        assert rank['worst_gap'] < 1e-4  # the replayed matchings are ties, not other choices
        assert rank['sync_bn'] > 10      # the model's batch norms were synchronised

    for step in range(STEPS):
        want = single[step]
        assert set(want) == set(ranks[0]['losses'][step])
        for key, value in want.items():
            mean = sum(r['losses'][step][key] for r in ranks) / WORLD
            assert mean == pytest.approx(value, rel=1e-4, abs=1e-6), (step, key)
    # the ranks' own losses differ (different samples): the comparison is not vacuous
    assert ranks[0]['losses'][0]['loss'] != pytest.approx(ranks[1]['losses'][0]['loss'])
    final = model.state_dict()
    initial = torch.load(tmp / 'weights.pth', weights_only=True)
    torch.testing.assert_close(ranks[0]['state'], ranks[1]['state'], rtol=0, atol=0)  # DDP
    moved, worst = 0, (0.0, '', 0.0, 0.0)
    for name, value in final.items():
        if not value.is_floating_point():  # e.g. num_batches_tracked
            assert torch.equal(ranks[0]['state'][name], value), name
            continue
        # Per tensor: distance between the set-ups against the distance trained. Rounding
        # differs with the batch split (BN sums, conv algorithms) as it does with the sample
        # order in one process, and three steps amplify it where gradients are small (the
        # query heads moved 1.4e-2 apart, reordering 9e-4): the two-rank run may disagree by
        # ten times the reordering noise or 3e-2 of the distance trained. A lost rank's
        # gradient or a wrong normalisation is O(1) here, and the per-step losses above agree
        # to 1e-4.
        step = (value.double() - initial[name].double()).norm()
        if step < 1e-6:  # not trained (e.g. a bias before a batch norm): only rounding noise
            torch.testing.assert_close(ranks[0]['state'][name], value, rtol=0, atol=1e-6)
            continue
        moved += 1
        apart = float((ranks[0]['state'][name].double() - value.double()).norm() / step)
        rounding = float((noise[name].double() - value.double()).norm() / step)
        worst = max(worst, (apart / max(3e-2, 10 * rounding), name, apart, rounding))
    assert worst[0] < 1, worst
    assert moved > 0.5 * len(final)  # training changed most tensors
