"""FAMO: a loss-rate task weighting (Liu et al., "FAMO: Fast Adaptive
Multitask Optimization", NeurIPS 2023), for MultiTaskBEVFusion's
``loss_balancer``.

Where FULLER's task calibration reads the task gradients at the shared map,
FAMO reads only the task losses: it weights the tasks so that their losses
fall at the same relative rate. K tasks, task losses l_k (each the sum of
the task's weighted loss terms, so ``loss_weights`` still apply), lower
bounds b_k (``min_losses``, 0 by default), logits w (K,), z = softmax(w):

* the model's objective for the step is ``c * sum_k z_k log(l_k - b_k + eps)``
  with ``c = (sum_k z_k / (l_k - b_k + eps))^-1`` held constant, so its
  gradient is ``sum_k a_k grad(l_k)`` with ``a_k = c z_k / (l_k - b_k + eps)``
  and ``sum_k a_k = 1``: a convex combination of the task gradients.
  :meth:`FAMOWeighting.factors` returns the a_k; the model multiplies each
  task's loss terms by its a_k (constants), which gives exactly that
  gradient;
* after the optimiser step the task losses are computed again on the same
  batch (l'_k; :class:`FAMOHook`), and the logits take one Adam step on
  ``g = J^T delta + gamma w``, where ``delta_k = log(l_k - b_k + eps) -
  log(l'_k - b_k + eps)`` is task k's relative decrease and
  ``J = diag(z) - z z^T`` the softmax's Jacobian: a task that fell less than
  the others gains weight. Adam's weight decay is the L2 form (added to the
  gradient), the published method's ``gamma``.

The logits and Adam's moments are buffers of the module, so they are saved
in checkpoints and restored on resume; the main optimiser never sees them.
In distributed training delta is averaged over the ranks before the step,
so every rank keeps the same weights.
"""
import contextlib
from typing import Dict, Optional, Sequence, Tuple

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from torch import Tensor, nn

from mmdet3d.registry import HOOKS, MODELS


@MODELS.register_module()
class FAMOWeighting(nn.Module):
    """FAMO's task weights for ``tasks``: the step's loss factors and the
    logits' update (module docstring).

    Args:
        tasks: task names, in the order of the logits.
        lr: the logits' Adam step size (the published beta, 0.025).
        weight_decay: L2 coefficient on the logits (the published gamma;
            1e-3 in the paper's Algorithm 2).
        min_losses: lower bound b_k per task name (0 where not given).
        eps: added to ``l_k - b_k`` inside the logarithms.
        betas, adam_eps: Adam's moment decays and denominator constant.
    """

    def __init__(self, tasks: Sequence[str] = ('det', 'seg'), lr: float = 0.025,
                 weight_decay: float = 1e-3,
                 min_losses: Optional[Dict[str, float]] = None,
                 eps: float = 1e-8, betas: Tuple[float, float] = (0.9, 0.999),
                 adam_eps: float = 1e-8) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        if len(self.tasks) < 2 or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f'FAMOWeighting: needs two or more distinct tasks, '
                             f'got {list(tasks)}')
        unknown = sorted(set(min_losses or {}) - set(self.tasks))
        if unknown:
            raise ValueError(f'FAMOWeighting: min_losses for unknown tasks '
                             f'{unknown}; tasks are {list(self.tasks)}')
        if lr <= 0 or weight_decay < 0 or eps <= 0:
            raise ValueError(f'FAMOWeighting: needs lr > 0, weight_decay >= 0, '
                             f'eps > 0; got {lr}, {weight_decay}, {eps}')
        self.lr, self.weight_decay, self.eps = float(lr), float(weight_decay), float(eps)
        self.betas, self.adam_eps = tuple(float(b) for b in betas), float(adam_eps)
        k = len(self.tasks)
        bounds = [float((min_losses or {}).get(t, 0.0)) for t in self.tasks]
        self.register_buffer('min_losses', torch.tensor(bounds))
        self.register_buffer('logits', torch.zeros(k))
        self.register_buffer('exp_avg', torch.zeros(k))
        self.register_buffer('exp_avg_sq', torch.zeros(k))
        self.register_buffer('num_updates', torch.zeros((), dtype=torch.long))
        # the task losses of the last forward ({task: detached scalar})
        self.last_losses: Dict[str, Tensor] = {}

    def extra_repr(self) -> str:
        return (f'tasks={self.tasks}, lr={self.lr}, '
                f'weight_decay={self.weight_decay}, eps={self.eps}')

    def weights(self) -> Dict[str, Tensor]:
        """{task: z_k}, the softmax of the logits."""
        return dict(zip(self.tasks, torch.softmax(self.logits, 0)))

    def _stack(self, losses: Dict[str, Tensor], what: str) -> Tensor:
        missing = [t for t in self.tasks if t not in losses]
        if missing:
            raise KeyError(f'FAMOWeighting: {what} lack tasks {missing}; '
                           f'got {sorted(losses)}')
        values = torch.stack([losses[t].detach().float().reshape(())
                              for t in self.tasks]).to(self.logits.device)
        shifted = values - self.min_losses
        if not bool(torch.isfinite(values).all()) or bool((shifted < 0).any()):
            raise ValueError(
                f'FAMOWeighting: {what} must be finite and at least min_losses '
                f'{dict(zip(self.tasks, self.min_losses.tolist()))}; got '
                f'{dict(zip(self.tasks, values.tolist()))}')
        return shifted + self.eps

    def factors(self, task_losses: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """{task: a_k} for the task losses of this step (constants summing
        to 1); they are also kept as :attr:`last_losses`."""
        shifted = self._stack(task_losses, 'task losses')
        self.last_losses = {t: task_losses[t].detach() for t in self.tasks}
        ratio = torch.softmax(self.logits, 0) / shifted
        return dict(zip(self.tasks, ratio / ratio.sum()))

    @torch.no_grad()
    def update(self, before: Dict[str, Tensor], after: Dict[str, Tensor]) -> None:
        """One Adam step of the logits from the task losses before and after
        the model's step on the same batch."""
        delta = (self._stack(before, 'losses before the step').log() -
                 self._stack(after, 'losses after the step').log())
        all_reduce(delta, op='mean')  # in place; a no-op outside distributed runs
        z = torch.softmax(self.logits, 0)
        grad = z * delta - z * torch.dot(z, delta) + self.weight_decay * self.logits
        beta1, beta2 = self.betas
        self.num_updates += 1
        n = int(self.num_updates)
        self.exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (self.exp_avg_sq / (1 - beta2 ** n)).sqrt() + self.adam_eps
        self.logits -= self.lr / (1 - beta1 ** n) * self.exp_avg / denom


@HOOKS.register_module()
class FAMOHook(Hook):
    """Drives the model's ``loss_balancer`` (:class:`FAMOWeighting`): after
    each optimiser step it computes the task losses again on the same batch
    (no gradient, in the optimiser wrapper's context, e.g. AMP's autocast;
    the model's buffers, e.g. BatchNorm statistics, are put back afterwards)
    and updates the FAMO logits. Costs one forward pass per iteration.
    Gradient accumulation is refused (the logits would update between the
    model's steps).

    Config use::

        model = dict(loss_balancer=dict(type='FAMOWeighting'))
        custom_hooks = _base_.custom_hooks + [dict(type='FAMOHook')]
    """

    priority = 'NORMAL'

    @staticmethod
    def _model(runner) -> nn.Module:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if getattr(model, 'loss_balancer', None) is None:
            raise RuntimeError(f'FAMOHook: {type(model).__name__} has no '
                               f'loss_balancer; set model.loss_balancer='
                               f'dict(type="FAMOWeighting") in the config')
        return model

    def before_train(self, runner) -> None:
        self._model(runner)
        wrappers = getattr(runner.optim_wrapper, 'optim_wrappers', None)
        for wrapper in (wrappers.values() if wrappers else [runner.optim_wrapper]):
            if getattr(wrapper, '_accumulative_counts', 1) != 1:
                raise RuntimeError('FAMOHook: gradient accumulation '
                                   '(accumulative_counts > 1) is not supported')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        model = self._model(runner)
        balancer = model.loss_balancer
        before = dict(balancer.last_losses)
        buffers = {name: buf.clone() for name, buf in model.named_buffers()
                   if not name.startswith('loss_balancer.')}
        wrapper = runner.optim_wrapper
        # the training forward's precision (AmpOptimWrapper: autocast)
        context = (wrapper.optim_context(model) if isinstance(wrapper, OptimWrapper)
                   else contextlib.nullcontext())
        with torch.no_grad(), context:
            data = model.data_preprocessor(data_batch, True)
            model(**data, mode='loss')
            for name, buf in model.named_buffers():
                if name in buffers:
                    buf.copy_(buffers[name])
        balancer.update(before, balancer.last_losses)
