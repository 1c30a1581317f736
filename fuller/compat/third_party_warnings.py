"""Third-party warnings that fuller triggers and cannot fix, silenced one by
one: each by its exact message, category and the module it is attributed
to, never by category for the whole process, so that every other warning
(fuller's own included) still reaches users and tests.

Installed by ``import fuller`` before anything else is imported
(:func:`ignore_third_party_warnings`); tests/conftest.py hands the same
list to pytest (:func:`pytest_filter_lines`), which resets the filters for
every test. tests/test_package.py checks that ``import fuller`` and a
training step of the tiny model emit no other warning.

Each entry names its source (pinned versions: tools/setup_env.sh). Remove an
entry when the pinned library stops emitting it; a stale entry filters
nothing.
"""
import warnings
from typing import List, NamedTuple, Type


class ThirdPartyWarning(NamedTuple):
    message: str            # regex matched at the start of the message
    category: Type[Warning]
    module: str             # regex of the whole module name the warning is attributed to
    source: str             # where it comes from and why fuller cannot fix it


THIRD_PARTY_WARNINGS = (
    ThirdPartyWarning(
        r'`torch\.cuda\.amp\.custom_(fwd|bwd)\(args\.\.\.\)` is deprecated',
        FutureWarning, r'spconv\.pytorch\.functional',
        'spconv 2.3 decorates its sparse-conv autograd Functions with '
        'torch.cuda.amp.custom_fwd/custom_bwd, deprecated since torch 2.4; '
        'eight warnings when mmdet3d imports spconv'),
    ThirdPartyWarning(
        r'Using a non-tuple sequence for multidimensional indexing is '
        r'deprecated', UserWarning, r'spconv\.pytorch\.core',
        "spconv 2.3's SparseConvTensor indexes with a list; torch warns on "
        "the first forward of mmdet3d's SparseEncoder"),
    ThirdPartyWarning(
        r'`torch\.jit\.(script|interface)` is deprecated',
        DeprecationWarning, r'torch\.jit\._script',
        'mmengine 0.10.7 (mmengine/optim/optimizer/zero_optimizer.py) '
        'imports torch.distributed.optim, whose functional optimisers are '
        'decorated with torch.jit.script / torch.jit.interface; fuller uses '
        'neither'),
    ThirdPartyWarning(
        r"'locale\.getdefaultlocale' is deprecated", DeprecationWarning,
        r'ccimport\.buildtools\.writer',
        "ccimport (pulled in by spconv's cumm) calls "
        'locale.getdefaultlocale when imported'),
    ThirdPartyWarning(
        r'``MultiScaleDeformableAttention`` has been moved',
        ImportWarning, r'mmcv\.cnn\.bricks\.transformer',
        'mmdet 3.3 (mmdet/models/layers/msdeformattn_pixel_decoder.py) '
        'imports it from its old mmcv place; reached through mmdet3d'),
    ThirdPartyWarning(
        r'To copy construct from a tensor, it is recommended', UserWarning,
        r'mmdet3d\.models\.task_modules\.coders\.centerpoint_bbox_coders',
        "mmdet3d 1.4's CenterPointBBoxCoder.decode stores post_center_range "
        'as a tensor and calls torch.tensor on it again from its second '
        'call on (CenterHead configs, e.g. fuller_tiny-centerhead)'),
    ThirdPartyWarning(
        r"Don't suggest using CPU device", UserWarning,
        r'mmdet3d\.apis\.inference',
        "mmdet3d 1.4's init_model warns on every CPU device; fuller.apis."
        'init_model and tools/analysis/visualize.py run on the CPU by design'),
)


def ignore_third_party_warnings() -> None:
    """Add an ``ignore`` filter for each entry of THIRD_PARTY_WARNINGS."""
    for entry in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings('ignore', message=entry.message,
                                category=entry.category,
                                module=entry.module + r'\Z')


def pytest_filter_lines() -> List[str]:
    """The same filters as pytest ``filterwarnings`` lines
    (``ignore:message:category:module``)."""
    return [f'ignore:{e.message}:{e.category.__name__}:{e.module}\\Z'
            for e in THIRD_PARTY_WARNINGS]
