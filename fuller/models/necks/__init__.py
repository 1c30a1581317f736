"""Image necks of the camera branch."""
from .generalized_lss_fpn import GeneralizedLSSFPN

__all__ = ['GeneralizedLSSFPN']
