"""Per-camera image augmentation that records its pixel mapping.

Shape shorthand: N cameras, H/W image height/width in pixels.

Frames: ``img`` is the pixel frame of the image as loaded (u right, v down;
integer coordinates are pixel centres, as in ``cam2img``); ``aug_img`` is
the pixel frame of the augmented image. ``img_aug_matrix`` (N, 4, 4) maps
homogeneous ``(u, v, d, 1)`` in ``img`` to ``(u', v', d, 1)`` in
``aug_img``: the 2D affine sits in the top-left 2x2 block and in the first
two entries of the last column; depth d passes through. To draw a LiDAR
point: ``(u d, v d, d, 1) = cam2img @ lidar2cam @ (x, y, z, 1)``, divide the
first two entries by d, then apply ``img_aug_matrix``.
"""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet3d.registry import TRANSFORMS


def affine_to_4x4(affine_2x3: np.ndarray) -> np.ndarray:
    """Embed a 2x3 pixel affine ``[A | b]`` into a homogeneous 4x4 matrix."""
    mat = np.eye(4, dtype=np.float64)
    mat[:2, :2] = affine_2x3[:, :2]
    mat[:2, 3] = affine_2x3[:, 2]
    return mat


def resize_affine(src_hw: Tuple[int, int], dst_hw: Tuple[int,
                                                         int]) -> np.ndarray:
    """The 2x3 affine of ``cv2.resize(src -> dst)`` (pixel-centre model).

    cv2 maps pixel centres by ``u' = (u + 0.5) * W'/W - 0.5``.
    """
    sy = dst_hw[0] / src_hw[0]
    sx = dst_hw[1] / src_hw[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def crop_flip_rotate_affine(crop_xy: Tuple[int, int], final_hw: Tuple[int,
                                                                      int],
                            flip: bool, rotate_deg: float) -> np.ndarray:
    """2x3 affine of crop (shift), horizontal flip, rotation about the centre.

    A positive ``rotate_deg`` turns the image content counter-clockwise as
    seen on screen (v points down), the convention of ``PIL.Image.rotate``.
    """
    h, w = final_hw
    mat = np.eye(3)
    mat[:2, 2] = [-crop_xy[0], -crop_xy[1]]
    if flip:
        mat = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0], [0, 0, 1]
                        ]) @ mat
    if rotate_deg != 0.0:
        theta = np.deg2rad(rotate_deg)
        c, s = np.cos(theta), np.sin(theta)
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        rot = np.eye(3)
        rot[:2, :2] = [[c, s], [-s, c]]
        rot[:2, 2] = centre - rot[:2, :2] @ centre
        mat = rot @ mat
    return mat[:2]


@TRANSFORMS.register_module()
class ImageAug3D(BaseTransform):
    """BEVFusion-style resize, crop, flip and rotation of each camera image.

    For every camera independently (training) or with fixed mean parameters
    (``is_train=False``): resize by ``r`` (anti-aliased ``cv2.resize``), crop
    a ``final_dim`` window whose bottom edge lies ``bot_pct`` of the resized
    height above the image bottom, flip horizontally, rotate about the
    window centre. Crop and rotation are applied with one
    ``cv2.warpAffine``; areas outside the source are zero.

    Required keys: ``img`` (list of N (H, W, 3) arrays).
    Modified keys: ``img``, ``img_shape``, ``pad_shape``.
    Added/updated keys: ``img_aug_matrix`` (N, 4, 4) float64; an existing
    one (e.g. from loading at a scale) is composed on the left.

    Args:
        final_dim: (H, W) of the output images.
        resize_lim: (min, max) resize factor, relative to the input images.
        bot_pct_lim: (min, max) fraction of the resized height kept below
            the crop window.
        rot_lim: (min, max) rotation in degrees.
        rand_flip: flip with probability 0.5 in training.
        is_train: random parameters when True, else the means of the
            limits, no flip and no rotation.
    """

    def __init__(self,
                 final_dim: Sequence[int],
                 resize_lim: Sequence[float],
                 bot_pct_lim: Sequence[float] = (0.0, 0.0),
                 rot_lim: Sequence[float] = (0.0, 0.0),
                 rand_flip: bool = False,
                 is_train: bool = False) -> None:
        if len(final_dim) != 2 or min(final_dim) <= 0:
            raise ValueError(f'ImageAug3D: final_dim must be (H, W) > 0, '
                             f'got {final_dim}')
        for name, lim in (('resize_lim', resize_lim),
                          ('bot_pct_lim', bot_pct_lim), ('rot_lim', rot_lim)):
            if len(lim) != 2 or lim[0] > lim[1]:
                raise ValueError(f'ImageAug3D: {name} must be (min, max), '
                                 f'got {lim}')
        if resize_lim[0] <= 0:
            raise ValueError(f'ImageAug3D: resize_lim must be > 0, got '
                             f'{resize_lim}')
        self.final_dim = (int(final_dim[0]), int(final_dim[1]))
        self.resize_lim = tuple(float(v) for v in resize_lim)
        self.bot_pct_lim = tuple(float(v) for v in bot_pct_lim)
        self.rot_lim = tuple(float(v) for v in rot_lim)
        self.rand_flip = bool(rand_flip)
        self.is_train = bool(is_train)

    def sample_params(self, src_hw: Tuple[int, int]) -> dict:
        """Augmentation parameters for one image of size ``src_hw``."""
        fh, fw = self.final_dim
        if self.is_train:
            resize = np.random.uniform(*self.resize_lim)
            bot_pct = np.random.uniform(*self.bot_pct_lim)
        else:
            resize = float(np.mean(self.resize_lim))
            bot_pct = float(np.mean(self.bot_pct_lim))
        new_hw = (max(1, int(round(src_hw[0] * resize))),
                  max(1, int(round(src_hw[1] * resize))))
        crop_y = int((1.0 - bot_pct) * new_hw[0]) - fh
        if self.is_train:
            crop_x = int(np.random.uniform(0, max(0, new_hw[1] - fw)))
            flip = self.rand_flip and bool(np.random.rand() < 0.5)
            rotate = float(np.random.uniform(*self.rot_lim))
        else:
            crop_x = int(max(0, new_hw[1] - fw) / 2)
            flip, rotate = False, 0.0
        return dict(resized_hw=new_hw,
                    crop_xy=(crop_x, crop_y),
                    flip=flip,
                    rotate=rotate)

    def augment_image(self, img: np.ndarray,
                      params: dict) -> Tuple[np.ndarray, np.ndarray]:
        """Apply ``params`` to one (H, W, C) image.

        Returns the augmented (fH, fW, C) image and the 2x3 affine mapping
        input pixels to output pixels.
        """
        src_hw = img.shape[:2]
        new_hw = params['resized_hw']
        interp = cv2.INTER_AREA if new_hw[0] < src_hw[0] else cv2.INTER_LINEAR
        resized = cv2.resize(img, (new_hw[1], new_hw[0]), interpolation=interp)
        warp = crop_flip_rotate_affine(params['crop_xy'], self.final_dim,
                                       params['flip'], params['rotate'])
        out = cv2.warpAffine(resized,
                             warp, (self.final_dim[1], self.final_dim[0]),
                             flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT,
                             borderValue=0)
        if out.ndim == 2:
            out = out[..., None]
        full = np.vstack([warp, [0, 0, 1]]) @ np.vstack(
            [resize_affine(src_hw, new_hw), [0, 0, 1]])
        return out, full[:2]

    def transform(self, results: dict) -> dict:
        imgs: List[np.ndarray] = results['img']
        if not isinstance(imgs, (list, tuple)):
            raise TypeError('ImageAug3D expects results["img"] to be a list '
                            'of per-camera images (LoadMultiViewImages)')
        prev: Optional[np.ndarray] = results.get('img_aug_matrix')
        new_imgs, mats = [], []
        for idx, img in enumerate(imgs):
            params = self.sample_params(img.shape[:2])
            out, affine = self.augment_image(img, params)
            mat = affine_to_4x4(affine)
            if prev is not None:
                mat = mat @ np.asarray(prev[idx], dtype=np.float64)
            new_imgs.append(out)
            mats.append(mat)
        results['img'] = new_imgs
        results['img_aug_matrix'] = np.stack(mats)
        results['img_shape'] = self.final_dim
        results['pad_shape'] = self.final_dim
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(final_dim={self.final_dim}, '
                f'resize_lim={self.resize_lim}, '
                f'bot_pct_lim={self.bot_pct_lim}, rot_lim={self.rot_lim}, '
                f'rand_flip={self.rand_flip}, is_train={self.is_train})')
