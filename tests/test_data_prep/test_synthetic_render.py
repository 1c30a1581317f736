"""The generator's camera images follow the pixel convention of
fuller.structures.frames: pixel centres at integer (u, v), so a camera point
(x, y, z) lands on pixel (round(v), round(u)) with u = fx x / z + cx,
v = fy y / z + cy (computed here by hand, not with the generator's code)."""
import numpy as np

from fuller.data_prep.synthetic.render import (GroundRaster, pixel_rays,
                                               render_camera)

W, H = 64, 48
FX, FY, CX, CY = 50.0, 55.0, 31.3, 23.6
CAM2IMG = np.array([[FX, 0., CX], [0., FY, CY], [0., 0., 1.]])
# camera looking along local +x from 1.5 m above the ground: cam x (right) =
# local -y, cam y (down) = local -z, cam z (forward) = local +x
CAM2LOCAL = np.array([[0., 0., 1.], [-1., 0., 0.], [0., -1., 0.]])
ORIGIN = np.array([0., 0., 1.5])
NO_MAP = dict(drivable_area=[], carpark_area=[], walkway=[], ped_crossing=[],
              stop_line=[], paint=[])


def test_pixel_rays_go_through_integer_pixel_centres():
    rays = pixel_rays(CAM2IMG, (W, H)).reshape(H, W, 3)
    for row, col in ((0, 0), (7, 40), (H - 1, W - 1)):
        x, y, z = rays[row, col]
        assert np.isclose(FX * x / z + CX, col, atol=1e-4)
        assert np.isclose(FY * y / z + CY, row, atol=1e-4)


def render_plate(point_cam, half_px=0.2):
    """Render a thin plate facing the camera, centred on ``point_cam`` and
    ``2 * half_px`` pixels wide and high: (owner map (H, W), image)."""
    x, y, z = point_cam
    centre = ORIGIN + CAM2LOCAL @ np.array([x, y, z])
    boxes = dict(centre=centre[None],
                 size=np.array([[2 * half_px * z / FX, 1e-3,
                                 2 * half_px * z / FY]]),  # (w, l, h)
                 yaw=np.zeros(1), colour=np.array([[255., 255., 255.]]))
    ground = GroundRaster(NO_MAP, (-1.0, -1.0, 1.0, 1.0))
    image, visible, _, owner = render_camera(
        ORIGIN, CAM2LOCAL, CAM2IMG, (W, H), pixel_rays(CAM2IMG, (W, H)),
        boxes, ground, return_owner=True)
    assert visible[0] == (owner == 0).sum()
    return owner, image


def test_small_bright_plate_lands_on_the_rounded_pixel():
    # fractions .8 and .85: round() and floor() pick different pixels
    for u, v, z in ((20.8, 30.85, 10.0), (45.8, 10.85, 7.0)):
        point = ((u - CX) * z / FX, (v - CY) * z / FY, z)
        x, y, _ = point
        u_hand, v_hand = FX * x / z + CX, FY * y / z + CY
        owner, image = render_plate(point)
        hit = np.argwhere(owner == 0)
        expected = (int(np.round(v_hand)), int(np.round(u_hand)))
        assert expected == (int(np.floor(v)) + 1, int(np.floor(u)) + 1)
        assert [tuple(p) for p in hit] == [expected]
        # the plate's grey (shaded white) there, not on its neighbours
        row, col = expected
        r, g, b = image[row, col].astype(int)
        assert r == g == b
        for nb in (image[row, col - 1], image[row - 1, col]):
            assert (nb != image[row, col]).any()
