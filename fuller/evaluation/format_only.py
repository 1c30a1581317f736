"""``tools/test.py --format-only``: checks, config rewrites and the final
move of a run's outputs into its output directory.

Output directory layout (what a finished run leaves)::

    DIR/results_nusc.json     the detection submission (validated)
    DIR/map_predictions/      per-sample map probabilities + index.json
                              (models with a map head; format in
                              fuller.evaluation.map_predictions)
    DIR/run.json              what produced them (config digest, checkpoint
                              sha256, info file, version, split) + summary

Everything is first written to ``DIR/.partial/``; only after the submission
passed :func:`fuller.evaluation.submission.validate_submission` are the
outputs moved into ``DIR`` and ``run.json`` written last. A directory
holding another run's ``run.json`` (or unrelated files) is refused before
any inference.
"""
import copy
import hashlib
import json
import os
import os.path as osp
import pickle
import shutil
import warnings
from typing import Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict

from fuller.utils.io import atomic_open

from .submission import (SubmissionError, tokens_from_dataroot,
                         tokens_from_file, validate_submission)

TEST_VERSION = 'v1.0-test'
RESULTS_FILE = 'results_nusc.json'
MAP_DIR = 'map_predictions'
MANIFEST = 'run.json'
PARTIAL = '.partial'
_DROP_AT_TEST = ('LoadAnnotations3D', 'LoadBEVMapMasks')
_IDENTITY = ('config_sha256', 'checkpoint_sha256', 'ann_file', 'version',
             'split')


class FormatOnlyError(RuntimeError):
    """Bad input to a format-only run, found before (or instead of)
    writing outputs; the message names the file and the problem."""


class OutputDirError(FormatOnlyError):
    """The output directory holds something this run must not touch."""


def test_dataset(cfg: Config):
    """The innermost dataset dict of ``cfg.test_dataloader``."""
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset.dataset
    return dataset


def _evaluators(cfg: Config) -> list:
    ev = cfg.get('test_evaluator') or []
    return [ev] if isinstance(ev, (dict, ConfigDict)) else list(ev)


def test_ann_file(cfg: Config) -> str:
    """Path of the test dataloader's info file."""
    dataset = test_dataset(cfg)
    return osp.join(dataset.get('data_root') or '', dataset.ann_file)


def apply_test_split(cfg: Config) -> None:
    """Point the test dataloader at the v1.0-test infos, in place.

    ``ann_file`` becomes ``cfg.test_split_ann_file`` (default
    ``nuscenes_infos_test.pkl``), the dataset reads no annotations
    (``test_mode=True, load_eval_anns=False``), the pipeline loads no ground
    truth (``LoadAnnotations3D``, ``LoadBEVMapMasks`` and ``gt_*`` keys go),
    and the metainfo version becomes ``v1.0-test``.
    """
    dataset = test_dataset(cfg)
    dataset.ann_file = cfg.get('test_split_ann_file',
                               'nuscenes_infos_test.pkl')
    dataset.test_mode = True
    dataset.load_eval_anns = False
    dataset.metainfo = dict(dataset.get('metainfo') or {},
                            version=TEST_VERSION)
    pipeline = []
    for step in dataset.get('pipeline') or []:
        if step['type'] in _DROP_AT_TEST:
            continue
        if 'keys' in step:
            step = dict(step, keys=[k for k in step['keys']
                                    if not k.startswith('gt_')])
        pipeline.append(step)
    dataset.pipeline = pipeline


def read_infos(path: str) -> dict:
    if not osp.isfile(path):
        raise FormatOnlyError(f'info file {path} not found; create it '
                              f'with `python tools/create_data.py '
                              f'nuscenes ...`')
    with open(path, 'rb') as f:
        infos = pickle.load(f)
    if not isinstance(infos, dict) or 'data_list' not in infos:
        raise FormatOnlyError(f'{path} is not an mmdet3d v2 info file '
                              f'(no data_list)')
    return infos


def check_split_infos(path: str, test_split: bool,
                      format_only: bool) -> dict:
    """Refuse infos of the wrong split; return version/split/tokens.

    Test infos (metainfo version v1.0-test, no annotations) are required
    exactly when the test split was asked for, and can only be formatted.
    """
    infos = read_infos(path)
    version = infos.get('metainfo', {}).get('version')
    data_list = infos['data_list']
    annotated = sum(1 for info in data_list if info.get('instances'))
    is_test = version == TEST_VERSION
    if test_split and (not is_test or annotated):
        raise FormatOnlyError(
            f'{path} holds {version} infos ({annotated} of {len(data_list)} '
            f'samples annotated), but the test split was requested '
            f'(--test-split / test_split=True); expected the {TEST_VERSION} '
            f'infos of `python tools/create_data.py nuscenes --version '
            f'{TEST_VERSION}` (set test_split_ann_file)')
    if is_test and not test_split:
        raise FormatOnlyError(f'{path} holds {TEST_VERSION} infos but the '
                              f'test split was not requested: pass '
                              f'--test-split')
    if is_test and not format_only:
        raise FormatOnlyError(f'{path}: the {TEST_VERSION} split has no '
                              f'ground truth; run with --format-only '
                              f'--out-dir DIR')
    return dict(version=version, split='test' if is_test else 'val',
                tokens={info['token'] for info in data_list})


def check_checkpoint_classes(path: str, classes: Sequence[str]) -> None:
    """Raise when the checkpoint was trained on another class list.

    Reads ``meta.dataset_meta.classes`` (mmengine's Runner stores the
    training dataset's metainfo there); warns when it is absent.
    """
    import pickle as _pickle

    import torch
    try:
        try:
            ckpt = torch.load(path, map_location='cpu', weights_only=True,
                              mmap=True)
        except RuntimeError:  # not a zip checkpoint: no mmap
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except _pickle.UnpicklingError as err:
        warnings.warn(f'checkpoint {path}: cannot read its meta safely '
                      f'({err}); class list not checked')
        return
    meta = (ckpt.get('meta') or {}) if isinstance(ckpt, dict) else {}
    saved = (meta.get('dataset_meta') or {}).get('classes')
    if saved is None:
        warnings.warn(f'checkpoint {path} records no class list '
                      f'(meta.dataset_meta.classes); cannot check it')
        return
    if list(saved) != list(classes):
        raise FormatOnlyError(
            f'checkpoint {path} was trained on classes {list(saved)}, the '
            f'config has {list(classes)}; the predicted labels would be '
            f'named wrongly. Use the config the checkpoint was trained with')


def sha256_file(path: str, chunk: int = 2**22) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def run_identity(cfg: Config, checkpoint: str, ann_file: str, version: str,
                 split: str) -> dict:
    """What makes two format-only runs "the same run"."""
    plain = copy.deepcopy(cfg.to_dict())
    for key in ('work_dir', 'launcher', 'load_from'):
        plain.pop(key, None)
    text = json.dumps(plain, sort_keys=True, default=str)
    return dict(config_sha256=hashlib.sha256(text.encode()).hexdigest(),
                checkpoint=osp.abspath(checkpoint),
                checkpoint_sha256=sha256_file(checkpoint),
                ann_file=osp.abspath(ann_file), version=version, split=split)


def check_out_dir(out_dir: str, identity: dict) -> None:
    """Refuse a directory holding another run or unrelated files."""
    if not osp.exists(out_dir):
        return
    if not osp.isdir(out_dir):
        raise OutputDirError(f'--out-dir {out_dir} exists and is not a '
                             f'directory')
    for where in (out_dir, osp.join(out_dir, PARTIAL)):
        manifest = osp.join(where, MANIFEST)
        if not osp.isfile(manifest):
            continue
        with open(manifest) as f:
            other = json.load(f)
        differs = [k for k in _IDENTITY if other.get(k) != identity[k]]
        if differs:
            raise OutputDirError(
                f'--out-dir {out_dir} holds another run ({manifest}: '
                f'{ {k: other.get(k) for k in differs} } differ from this '
                f'run\'s { {k: identity[k] for k in differs} }); choose a new '
                f'--out-dir or delete it')
    ours = {RESULTS_FILE, MAP_DIR, MANIFEST, PARTIAL}
    foreign = sorted(set(os.listdir(out_dir)) - ours)
    has_manifest = osp.isfile(osp.join(out_dir, MANIFEST)) or \
        osp.isfile(osp.join(out_dir, PARTIAL, MANIFEST))
    if foreign or (os.listdir(out_dir) and not has_manifest):
        raise OutputDirError(
            f'--out-dir {out_dir} is not empty and holds files of no '
            f'format-only run ({foreign[:5] or os.listdir(out_dir)[:5]}); '
            f'choose a new or empty --out-dir')


def start_partial(out_dir: str, identity: dict) -> str:
    """(Main process) empty ``DIR/.partial`` and write its manifest."""
    partial = osp.join(out_dir, PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    with atomic_open(osp.join(partial, MANIFEST)) as f:
        json.dump(identity, f, indent=1)
    return partial


def format_only_evaluators(cfg: Config, partial: str) -> list:
    """The test evaluators of a format-only run writing into ``partial``:
    the submission writer (detection head) and the map writer (map head)."""
    dataset = test_dataset(cfg)
    ann_file = test_ann_file(cfg)
    evaluators = []
    if cfg.model.get('det_head') is not None:
        evaluators.append(dict(
            type='NuScenesSubmissionMetric', data_root=dataset.data_root,
            ann_file=ann_file, out_file=osp.join(partial, RESULTS_FILE),
            modality=dict(dataset.get('modality') or {}), format_only=True))
    seg_head = cfg.model.get('seg_head')
    if seg_head is not None:
        evaluators.append(dict(
            type='BEVMapPredictionWriter', out_dir=osp.join(partial, MAP_DIR),
            grid=dict(seg_head.map_grid), ann_file=ann_file,
            **({'classes': list(seg_head.classes)} if 'classes' in seg_head
               else {})))
    if not evaluators:
        raise FormatOnlyError('the model has neither det_head nor seg_head')
    return evaluators


def expected_tokens(data_root: str, version: str, split: str,
                    ann_file: str) -> set:
    """The split's sample tokens from the dataroot tables, or from the info
    file when the tables are not there."""
    if osp.isfile(osp.join(data_root, version, 'scene.json')):
        return tokens_from_dataroot(data_root, version, split)
    warnings.warn(f'no {version} tables under {data_root}: checking token '
                  f'coverage against {ann_file}')
    return tokens_from_file(ann_file)


def prepare_run(cfg: Config, checkpoint: str,
                out_dir: Optional[str]) -> Tuple[Optional[dict], dict]:
    """Every check of a test run before inference, in place on ``cfg``.

    Applies the test-split switch (``cfg.test_split``), refuses infos of the
    wrong split and a checkpoint trained on other classes; with ``out_dir``
    (format-only) also refuses an output directory holding another run and
    installs the format-only evaluators writing into ``out_dir/.partial``.

    Returns:
        (run identity or None without ``out_dir``, dict of version, split
        and the info file's tokens).
    """
    if cfg.get('test_split', False):
        apply_test_split(cfg)
    ann_file = test_ann_file(cfg)
    split = check_split_infos(ann_file, bool(cfg.get('test_split')),
                              out_dir is not None)
    classes = (test_dataset(cfg).get('metainfo') or {}).get('classes')
    if classes is not None:
        check_checkpoint_classes(checkpoint, classes)
    if out_dir is None:
        return None, split
    identity = run_identity(cfg, checkpoint, ann_file, split['version'],
                            split['split'])
    check_out_dir(out_dir, identity)
    cfg.test_evaluator = format_only_evaluators(cfg, osp.join(out_dir,
                                                              PARTIAL))
    return identity, split


def finish(out_dir: str, identity: dict, tokens: Optional[set]) -> dict:
    """(Main process) validate ``.partial``, then move it into ``out_dir``.

    Raises ``FormatOnlyError`` (outputs stay in ``.partial``) when the
    submission breaks a rule.
    """
    partial = osp.join(out_dir, PARTIAL)
    summary = {}
    results = osp.join(partial, RESULTS_FILE)
    if osp.isfile(results):
        try:
            summary = validate_submission(results, tokens)
        except SubmissionError as err:
            raise FormatOnlyError(f'{results} fails validation, nothing was '
                                  f'moved into {out_dir}: {err}') from err
    names = [n for n in (RESULTS_FILE, MAP_DIR)
             if osp.exists(osp.join(partial, n))]
    if osp.exists(osp.join(out_dir, MANIFEST)):
        os.remove(osp.join(out_dir, MANIFEST))  # the old run is going
    for name in (RESULTS_FILE, MAP_DIR):
        old = osp.join(out_dir, name)
        if osp.isdir(old):
            shutil.rmtree(old)
        elif osp.exists(old):
            os.remove(old)
    for name in names:
        os.replace(osp.join(partial, name), osp.join(out_dir, name))
    with atomic_open(osp.join(out_dir, MANIFEST)) as f:
        json.dump(dict(identity, outputs=names, submission=summary), f,
                  indent=1)
    shutil.rmtree(partial)
    return summary
