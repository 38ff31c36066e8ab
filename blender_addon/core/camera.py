"""Camera pose and pinhole intrinsics, computed without bpy (the Blender layer only applies
``matrix_world``, the focal length and the 36 mm sensor).

Conventions: the car stands centred at the origin on the ground plane z = 0, z up, its front
towards -y. Azimuth 0 puts the camera in front of the car (on the -y axis) and grows
counter-clockwise seen from above (azimuth 90 = camera on +x, the car's left side). Elevation is
measured up from the horizontal plane through the look-at point. The camera aims at
``LOOK_AT_HEIGHT`` above the car centre (about the middle of a car's height, so the car fills
the frame at every elevation); ``distance`` is measured from that point. Jitter moves only the
look-at point (Gaussian, std = jitter in metres per axis, seeded per image); the camera
location stays put, so framing varies but the viewing angle barely does.

A Blender camera looks along its local -Z with local +Y up (x right), so matrix_world's
columns are (right, up, backward, location). OpenCV's camera looks along +Z with +Y down;
``opencv_camera`` gives the pinhole model in that convention: x_pixel ~ K (R X_world + t).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

LOOK_AT_HEIGHT = 0.6  # m above the ground
SENSOR_WIDTH_MM = 36.0  # Blender's default sensor, fit AUTO


@dataclass(frozen=True)
class CameraPose:
    location: tuple[float, float, float]
    look_at: tuple[float, float, float]
    matrix_world: tuple[tuple[float, ...], ...]  # 4x4, row-major

    def flat_matrix(self) -> list[float]:
        return [v for row in self.matrix_world for v in row]


def derive_seed(seed: int, purpose: str) -> int:
    """A stable 31-bit sub-seed of a per-image seed for one purpose (e.g. camera jitter)."""
    digest = hashlib.sha256(f"carprobe:{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def camera_pose(azimuth: float, elevation: float, distance: float, jitter: float = 0.0,
                seed: int = 0) -> CameraPose:
    """Camera location and look-at matrix (angles in degrees, lengths in metres)."""
    az = math.radians(azimuth)
    el = math.radians(elevation)
    target = (0.0, 0.0, LOOK_AT_HEIGHT)
    location = (
        target[0] + distance * math.cos(el) * math.sin(az),
        target[1] - distance * math.cos(el) * math.cos(az),
        target[2] + distance * math.sin(el),
    )
    if jitter > 0:
        rng = random.Random(derive_seed(seed, "camera-jitter"))
        target = tuple(t + rng.gauss(0.0, jitter) for t in target)  # type: ignore[assignment]
    return CameraPose(location, target, look_at_matrix(location, target))


def look_at_matrix(location, target, world_up=(0.0, 0.0, 1.0)) -> tuple[tuple[float, ...], ...]:
    forward = _normalize(_sub(target, location))
    right = _cross(forward, world_up)
    if _norm(right) < 1e-9:  # looking straight up or down: any horizontal right vector works
        right = (1.0, 0.0, 0.0)
    right = _normalize(right)
    up = _cross(right, forward)
    back = tuple(-c for c in forward)
    return tuple(
        (right[i], up[i], back[i], location[i]) for i in range(3)
    ) + ((0.0, 0.0, 0.0, 1.0),)


def intrinsics(focal_length_mm: float, width: int, height: int,
               sensor_width_mm: float = SENSOR_WIDTH_MM) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels for Blender's sensor_fit AUTO: the sensor width spans the
    larger image side; pixels are square; the principal point is the image centre."""
    fx = focal_length_mm / sensor_width_mm * max(width, height)
    return fx, fx, width / 2.0, height / 2.0


def opencv_camera(pose: CameraPose, fx: float, fy: float, cx: float, cy: float):
    """(K 3x3, [R|t] 3x4) in OpenCV's convention: [R|t] maps world points into a camera frame
    with x right, y down, z forward (Blender's camera frame with y and z negated), and K maps
    that frame to pixels whose centres are at integer coordinates, (0, 0) the top-left pixel's
    centre; hence the principal point is Blender's image centre (cx, cy) minus half a pixel."""
    m = pose.matrix_world
    right = tuple(m[i][0] for i in range(3))
    down = tuple(-m[i][1] for i in range(3))
    forward = tuple(-m[i][2] for i in range(3))
    location = pose.location
    K = ((fx, 0.0, cx - 0.5), (0.0, fy, cy - 0.5), (0.0, 0.0, 1.0))
    Rt = tuple((*axis, -sum(a * c for a, c in zip(axis, location))) for axis in (right, down, forward))
    return K, Rt


def _sub(a, b):
    return tuple(x - y for x, y in zip(a, b))


def _cross(a, b):
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _norm(a) -> float:
    return math.sqrt(sum(x * x for x in a))


def _normalize(a):
    n = _norm(a)
    return tuple(x / n for x in a)
