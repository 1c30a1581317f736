from .frames import (BEVGrid, apply_transform, compose, invert_transform,
                     make_transform)

__all__ = [
    'BEVGrid', 'make_transform', 'invert_transform', 'compose',
    'apply_transform'
]
