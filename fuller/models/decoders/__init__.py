from .bev_decoder import BEVDecoder

__all__ = ['BEVDecoder']
