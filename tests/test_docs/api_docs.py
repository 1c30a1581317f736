"""Which public classes and functions of fuller lack documentation.

The public API is (:func:`public_objects`):

* every class or function that fuller registers in a registry of mmdet3d
  (or of mmengine, the registries mmdet3d's inherit from);
* every class or function named in the ``__all__`` of a package that
  ``fuller/__init__.py`` imports or registers (:func:`top_packages`:
  ``fuller.compat``, ``fuller.models``, ...) or of one of their subpackages
  (``fuller.models.heads``, ...), when it is defined in fuller.

:func:`missing_docs` states, per object, what its documentation lacks:

* a docstring of its own (not one inherited from a base class);
* every argument named in it: the parameters of a function, or of a class's
  own ``__init__`` (keyword-only included; ``self``, ``init_cfg``,
  ``*args``/``**kwargs`` excepted), each as a word in the docstring of the
  class, of its ``__init__`` or of its module;
* for an ``nn.Module`` or autograd ``Function`` that defines ``forward``:
  what forward takes and returns, with shapes, i.e. a docstring on
  ``forward`` or a shape shorthand (``(B, ...)``) in the class or module
  docstring.
"""
import ast
import importlib
import inspect
import re
from pathlib import Path
from typing import Dict, List, Tuple

SKIP_PARAMS = {'self', 'cls', 'init_cfg', 'args', 'kwargs'}
_SHAPE = re.compile(r'\(\s*[A-Z][A-Za-z_]*\s*[,*)]|\[\s*[A-Z]\s*,|shape', re.I)


def _registered() -> Dict[str, object]:
    import mmdet3d.registry as mmdet3d_registry
    import mmengine.registry as mmengine_registry
    from mmengine.registry import Registry

    found = {}
    for module in (mmdet3d_registry, mmengine_registry):
        for reg_name, reg in vars(module).items():
            if not isinstance(reg, Registry):
                continue
            for name, obj in reg.module_dict.items():
                if getattr(obj, '__module__', '').startswith('fuller.'):
                    found[f'{obj.__module__}.{obj.__qualname__}'] = obj
    return found


def top_packages() -> List[str]:
    """The subpackages ``fuller/__init__.py`` imports (``from . import``)
    or names in ``REGISTERING_PACKAGES`` (imported on the first registry
    query)."""
    import fuller
    tree = ast.parse(Path(fuller.__file__).read_text(encoding='utf-8'))
    names = [f'fuller.{alias.name}' for node in tree.body
             if isinstance(node, ast.ImportFrom) and node.level == 1
             and not node.module for alias in node.names]
    names += list(getattr(fuller, 'REGISTERING_PACKAGES', ()))
    return list(dict.fromkeys(names))


def _exported() -> Dict[str, object]:
    found, seen = {}, set()

    def walk(pkg):
        if pkg.__name__ in seen:
            return
        seen.add(pkg.__name__)
        for name in getattr(pkg, '__all__', ()):
            obj = getattr(pkg, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and \
                    getattr(obj, '__module__', '').startswith('fuller.'):
                found[f'{obj.__module__}.{obj.__qualname__}'] = obj
        for value in vars(pkg).values():
            if inspect.ismodule(value) and hasattr(value, '__path__') and \
                    value.__name__.startswith(pkg.__name__ + '.'):
                walk(value)

    for name in top_packages():
        walk(importlib.import_module(name))
    return found


def public_objects() -> Dict[str, object]:
    """Qualified name -> object, for the public API defined above."""
    for name in top_packages():      # registers everything
        importlib.import_module(name)
    found = _registered()
    found.update(_exported())
    return dict(sorted(found.items()))


def _params(func) -> List[str]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values()
            if p.name not in SKIP_PARAMS and p.name.lstrip('_')
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _own_doc(obj) -> str:
    doc = obj.__dict__.get('__doc__') if inspect.isclass(obj) else \
        obj.__doc__
    return inspect.cleandoc(doc) if doc else ''


def _is_tensor_module(cls) -> bool:
    import torch
    return issubclass(cls, (torch.nn.Module, torch.autograd.Function)) and \
        'forward' in cls.__dict__


def missing_docs(name: str, obj) -> List[str]:
    """What the documentation of ``obj`` lacks (empty: nothing)."""
    doc = _own_doc(obj)
    if not doc:
        return ['no docstring']
    module_doc = inspect.getmodule(obj).__doc__ or ''
    problems = []
    if inspect.isclass(obj):
        init = obj.__dict__.get('__init__')
        params = _params(init) if init is not None else []
        text = '\n'.join([doc, (init.__doc__ or '') if init else '',
                          module_doc])
        if _is_tensor_module(obj):
            forward_doc = obj.__dict__['forward'].__doc__ or ''
            if not forward_doc.strip() and not _SHAPE.search(doc) and \
                    not _SHAPE.search(module_doc):
                problems.append('forward: no docstring and no shapes in the '
                                'class or module docstring')
    else:
        params = _params(obj)
        text = doc
    missing = [p for p in params
               if not re.search(rf'(?<![\w.]){re.escape(p)}(?!\w)', text)]
    if missing:
        problems.append(f'arguments not described: {", ".join(missing)}')
    return problems


def undocumented() -> List[Tuple[str, List[str]]]:
    """``(qualified name, problems)`` for each public object that lacks
    documentation."""
    out = []
    for name, obj in public_objects().items():
        problems = missing_docs(name, obj)
        if problems:
            out.append((name, problems))
    return out
