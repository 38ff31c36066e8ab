"""OpenCV-style camera columns (issue 15.4): K and [R|t] project the world like Blender's camera
(looking down its -Z, y up) does, in OpenCV's frame (looking down +Z, y down)."""

from __future__ import annotations

import json
import math

from blender_addon.core.camera import camera_pose, intrinsics, opencv_camera
from blender_addon.core.sampling import camera_columns


def project(K, Rt, point):
    cam = [sum(Rt[r][c] * point[c] for c in range(3)) + Rt[r][3] for r in range(3)]
    pixel = [sum(K[r][c] * cam[c] for c in range(3)) for r in range(3)]
    return pixel[0] / pixel[2], pixel[1] / pixel[2], cam[2]


def test_look_at_point_lands_on_the_principal_point_in_front_of_the_camera():
    fx, fy, cx, cy = intrinsics(50.0, 64, 48)
    pose = camera_pose(30.0, 20.0, 5.0)
    K, Rt = opencv_camera(pose, fx, fy, cx, cy)
    u, v, depth = project(K, Rt, pose.look_at)
    assert math.isclose(u, 31.5, abs_tol=1e-9) and math.isclose(v, 23.5, abs_tol=1e-9)  # pixel-centre convention
    assert math.isclose(depth, 5.0, rel_tol=1e-9)  # +Z forward: the look-at point is 5 m ahead


def test_image_axes_right_and_down():
    fx, fy, cx, cy = intrinsics(35.0, 64, 64)
    pose = camera_pose(0.0, 0.0, 6.0)  # in front of the car on -y, looking along +y
    K, Rt = opencv_camera(pose, fx, fy, cx, cy)
    x, y, z = pose.look_at
    u_right, _, _ = project(K, Rt, (x + 0.5, y, z))  # world +x is the camera's right from here
    _, v_up, _ = project(K, Rt, (x, y, z + 0.5))  # world up is image up: smaller v
    assert u_right > 31.5 + 1 and v_up < 31.5 - 1
    # the pinhole scale: 0.5 m at 6 m is fx * 0.5 / 6 pixels
    assert math.isclose(u_right - 31.5, fx * 0.5 / 6.0, rel_tol=1e-9)


def test_camera_columns_hold_k_and_rt_as_json_matrices():
    values = {"camera.focal_length": 50.0, "camera.azimuth": 45.0, "camera.elevation": 10.0,
              "camera.distance": 7.0, "camera.jitter": 0.0}
    columns = camera_columns(values, 96, 64, seed=1)
    K, Rt = json.loads(columns["camera.K"]), json.loads(columns["camera.Rt"])
    assert K[0][2] == columns["camera.cx"] - 0.5 and K[1][1] == columns["camera.fy"] and K[2] == [0.0, 0.0, 1.0]
    # [R|t] inverts matrix_world up to the axis flip: the camera centre maps to the origin
    centre = (columns["camera.location_x"], columns["camera.location_y"], columns["camera.location_z"])
    cam = [sum(Rt[r][c] * centre[c] for c in range(3)) + Rt[r][3] for r in range(3)]
    assert all(abs(c) < 1e-5 for c in cam)
    m = json.loads(columns["camera.matrix_world"])
    assert Rt[2][:3] == [-m[2], -m[6], -m[10]]  # forward = -(Blender camera Z axis)
