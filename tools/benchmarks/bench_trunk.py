"""Parameters and train-step time of the multi-task study's trunk settings
against the tiny shared-decoder model, measured in one run.

Settings (configs/study, docs/study-v3): ``shared`` the tiny plain-sum model
(trunk width 64, one shared BEV decoder; the reference), ``taskdec`` a BEV
decoder per task, ``w128`` / ``w256`` the shared trunk 128 / 256 channels
wide, ``famo`` the tiny model with FAMO's task weights (docs/study-famo).
One step = training forward on a fixed two-sample batch, backward of the
summed loss and an AdamW step; for ``famo`` also what its ``FAMOHook`` does
after each step (the second forward on the same batch and the logits'
update), through the hook itself. Settings are interleaved per iteration
(so load from other processes falls on all of them alike) after one warm-up
step each; the report gives the median step time and its ratio to
``shared``, and parameter counts in total and in the decoder(s).
"""
import argparse
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {
    'shared': 'configs/bevfusion/bevfusion_tiny_1xb2-24e_synthetic-nus.py',
    'taskdec': 'configs/study/bevfusion_tiny-taskdec_1xb2-24e_synthetic-nus.py',
    'w128': 'configs/study/bevfusion_tiny-w128_1xb2-24e_synthetic-nus.py',
    'w256': 'configs/study/bevfusion_tiny-w256_1xb2-24e_synthetic-nus.py',
    'famo': 'configs/study/bevfusion_tiny-famo_1xb2-24e_synthetic-nus.py',
}
REFERENCE = 'shared'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--iters', type=int, default=5,
                   help='timed steps per setting (after one warm-up)')
    p.add_argument('--threads', type=int, default=1,
                   help='torch CPU threads (the study trains with 1)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--settings', nargs='+', default=list(SETTINGS),
                   choices=list(SETTINGS))
    return p.parse_args(argv)


def _decoder_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters()
               if n.startswith(('decoder.', 'task_decoders.')))


def run(argv=None) -> dict:
    args = parse_args(argv)
    from types import SimpleNamespace

    import torch

    import fuller  # noqa: F401  (registers the modules)
    from fuller.calibration import FAMOHook
    from fuller.testing import build_model_from_config, make_multitask_data
    torch.set_num_threads(args.threads)
    names = [REFERENCE] + [s for s in args.settings if s != REFERENCE]
    models, raws, batches, optims, times = {}, {}, {}, {}, {}
    for name in names:
        model = build_model_from_config(str(ROOT / SETTINGS[name]), seed=0)
        model = model.to(args.device).train()
        models[name] = model
        raws[name] = make_multitask_data((0, 1))  # as the data loader gives it
        batches[name] = model.data_preprocessor(raws[name], training=True)
        optims[name] = torch.optim.AdamW(model.parameters(), lr=1e-4)
        times[name] = []

    def step(name):
        model, optim = models[name], optims[name]
        optim.zero_grad()
        losses = model(**batches[name], mode='loss')
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        optim.step()
        if getattr(model, 'loss_balancer', None) is not None:
            # what the config's FAMOHook runs after each step, on the raw batch
            runner = SimpleNamespace(model=model, optim_wrapper=None)
            FAMOHook().after_train_iter(runner, 0, data_batch=raws[name])

    for name in names:  # warm-up
        step(name)
    for _ in range(args.iters):
        for name in names:
            start = time.perf_counter()
            step(name)
            if args.device.startswith('cuda'):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    ref = statistics.median(times[REFERENCE])
    report = {}
    for name in names:
        med = statistics.median(times[name])
        model = models[name]
        report[name] = dict(
            config=SETTINGS[name],
            params=sum(p.numel() for p in model.parameters()),
            decoder_params=_decoder_params(model),
            step_s_median=round(med, 4), step_ratio=round(med / ref, 3),
            steps=[round(t, 4) for t in times[name]])
    print(f'threads {args.threads}, {args.iters} interleaved steps each; '
          f'ratio to {REFERENCE!r}')
    print(f"{'setting':<10}{'params':>12}{'decoder':>12}{'step s':>10}"
          f"{'ratio':>8}")
    for name, r in report.items():
        print(f"{name:<10}{r['params']:>12,}{r['decoder_params']:>12,}"
              f"{r['step_s_median']:>10.3f}{r['step_ratio']:>8.2f}")
    return report


def main(argv=None) -> dict:
    return run(argv)


if __name__ == '__main__':
    main()
