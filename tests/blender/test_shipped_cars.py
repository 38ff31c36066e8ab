"""The shipped car models (assets/cars): every one renders once, small, with its parts in the
mask, repainted by paint.color, standing centred on the ground and facing -y (azimuth 0 = front)."""

import colorsys
import math

import bpy
import numpy as np
import pytest

from blender_addon.blender import scene as scene_mod
from blender_addon.blender.render import make_image_renderer
from blender_addon.core import car_models
from blender_addon.core.sampling import sample_row
from blender_addon.core.schema import MASK_PARTS
from blender_addon.core.spec import parse_spec

from test_scene_render import read_png_gray

PAINT_HUE = 0.8  # purple-magenta: no shipped model is painted anything like it


def _light_materials(model: str) -> set[str]:
    return {n for n in car_models.material_names(car_models.SHIPPED[model].file)
            if car_models.part_of_material(n) == "lights"}


def _spec(azimuth: float):
    return parse_spec({
        "schema": 1, "name": "shipped", "design": {"kind": "grid"},
        "render": {"engine": "cycles", "width": 96, "height": 96, "samples": 2, "masks": True},
        "car": {"body": {"values": list(car_models.SHIPPED_IDS)}},
        "paint": {"color": f"hsv({PAINT_HUE}, 0.8, 0.7)", "metallic": 0.0, "coat": 0.0, "roughness": 0.8},
        "lighting": {"kind": "studio"},
        "camera": {"azimuth": azimuth, "elevation": 15.0, "distance": 9.5},
        "background": {"kind": "color", "color": "gray", "ground": True},
    })


def _world_faces(root):
    """(material name, world centre, area) of every face of the imported model."""
    out = []
    for obj in root.children_recursive:
        if obj.type != "MESH":
            continue
        m = obj.matrix_world
        for poly in obj.data.polygons:
            mat = obj.material_slots[poly.material_index].material if obj.material_slots else None
            out.append((mat.name if mat else "", m @ poly.center, poly.area))
    return out


def _centroid_y(faces, prefix: str) -> float | None:
    picked = [(c, a) for name, c, a in faces if name.startswith(prefix)]
    total = sum(a for _, a in picked)
    return sum(c.y * a for c, a in picked) / total if total > 0 else None


def test_every_shipped_model_renders_with_parts_paint_and_pose(tmp_path):
    assert len(car_models.SHIPPED_IDS) >= 8
    bpy.ops.wm.read_factory_settings(use_empty=True)
    # Front-left view; a model whose only lamps are at the back is seen from the rear-left.
    front, rear = _spec(30.0), _spec(150.0)
    renderers = {id(front): make_image_renderer(front), id(rear): make_image_renderer(rear)}
    faced = 0
    try:
        for i, model in enumerate(car_models.SHIPPED_IDS):
            shipped = car_models.SHIPPED[model]
            lights = _light_materials(model)
            spec = rear if lights and not any(n.startswith("lights:front") for n in lights) else front
            row = sample_row(spec, i)
            assert row["car.body"] == model
            img_path, mask_path = tmp_path / f"{model}.png", tmp_path / f"{model}_mask.png"
            renderers[id(spec)](row, img_path, mask_path)

            w, h, raw = read_png_gray(mask_path)
            ids = np.frombuffer(raw, dtype=np.uint8).reshape(h, w)
            counts = {part: int((ids == k).sum()) for k, part in enumerate(MASK_PARTS)}
            for part in ("body", "glass", "wheels"):
                assert counts[part] > 0, (model, counts)
            if lights:
                assert counts["lights"] > 0, (model, counts)

            # Paint: the body's pixels take the paint colour (a texture on the paint is unlinked).
            img = bpy.data.images.load(str(img_path))
            rgb = np.array(img.pixels[:], dtype=np.float32).reshape(h, w, 4)[::-1, :, :3]
            bpy.data.images.remove(img)
            body = rgb[ids == MASK_PARTS.index("body")]
            hsv = np.array([colorsys.rgb_to_hsv(*p) for p in body])
            paint = (np.abs(hsv[:, 0] - PAINT_HUE) < 0.08) & (hsv[:, 1] > 0.3)
            assert paint.mean() > 0.6, (model, float(paint.mean()))

            # Glass is opaque (see-through glass would show the interior in the glass mask).
            for mat in scene_mod._model_materials(root := bpy.data.objects[scene_mod.MODEL_ROOT]):
                if mat.pass_index == MASK_PARTS.index("glass"):
                    bsdf = scene_mod._principled(mat)
                    assert bsdf.inputs["Alpha"].default_value == 1.0 and not bsdf.inputs["Alpha"].is_linked
                    assert bsdf.inputs["Transmission Weight"].default_value == 0.0, mat.name

            # Pose: on the ground, centred, the length of the manifest, front lamps towards -y.
            faces = _world_faces(root)
            pts = [obj.matrix_world @ v.co for obj in root.children_recursive if obj.type == "MESH"
                   for v in obj.data.vertices]
            lo = [min(p[k] for p in pts) for k in range(3)]
            hi = [max(p[k] for p in pts) for k in range(3)]
            assert abs(lo[2]) < 1e-3, (model, lo[2])
            assert abs(lo[0] + hi[0]) < 2e-3 and abs(lo[1] + hi[1]) < 2e-3, (model, lo, hi)
            assert hi[1] - lo[1] == pytest.approx(shipped.length, rel=1e-3)
            assert hi[1] - lo[1] > hi[0] - lo[0]  # lengthwise along y
            y_front = _centroid_y(faces, "lights:front")
            y_rear = _centroid_y(faces, "lights:rear")
            if y_front is not None:
                assert y_front < -0.25 * shipped.length, (model, y_front)
            if y_rear is not None:
                assert y_rear > 0.25 * shipped.length, (model, y_rear)
            faced += y_front is not None or y_rear is not None
    finally:
        bpy.ops.wm.read_factory_settings(use_empty=True)
    # Every model with named front or rear lamps was checked (all but one in the package).
    assert faced >= len(car_models.SHIPPED_IDS) - 1


def test_model_yaw_turns_a_user_model(tmp_path):
    """A model that faces +y is turned by car.model_yaw = 180; its length stays along y."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    try:
        spec = parse_spec({"schema": 1, "name": "yaw", "design": {"kind": "grid"},
                           "render": {"width": 32, "height": 32, "samples": 1},
                           "car": {"body": "model", "model_file": str(car_models.SHIPPED["hatch_a"].file),
                                   "model_yaw": {"values": [0.0, 180.0, 90.0]}}})
        ys = []
        for i in range(3):
            row = sample_row(spec, i)
            scene_mod.apply_row(row, spec)
            faces = _world_faces(bpy.data.objects[scene_mod.MODEL_ROOT])
            ys.append(_centroid_y(faces, "lights:front"))
        assert ys[0] < -1.0 and ys[1] > 1.0  # turned round: the front is now at +y
        root = bpy.data.objects[scene_mod.MODEL_ROOT]
        assert math.degrees(root.rotation_euler.z) == pytest.approx(90.0)
        assert abs(ys[2]) < 0.3  # a quarter turn: the front lamps are at the side, not the ends
    finally:
        bpy.ops.wm.read_factory_settings(use_empty=True)


def test_a_user_model_gets_parts_opaque_glass_and_repaintable_texture(tmp_path):
    """An OBJ named like the package's own files: tyres as rubber/neumaticos, GLASS_headlights,
    see-through glass (d 0.25) and a texture on the paint's base colour."""
    from blender_addon.blender.render import write_png_gray8

    write_png_gray8(tmp_path / "paint.png", 2, 2, [b"\x80\x40", b"\x40\x80"])
    mtl = tmp_path / "kobs.mtl"
    mtl.write_text("newmtl carPaint\nKd 0.8 0.8 0.8\nmap_Kd paint.png\n"
                   "newmtl GLASS_headlights\nKd 0.9 0.9 0.9\nd 0.3\n"
                   "newmtl glass\nKd 0.8 0.8 0.8\nd 0.25\n"
                   "newmtl black_rubber\nKd 0.02 0.02 0.02\n"
                   "newmtl neumaticos\nKd 0.02 0.02 0.02\n")
    names = ["carPaint", "GLASS_headlights", "glass", "black_rubber", "neumaticos"]
    lines = [f"mtllib {mtl.name}", "vt 0 0", "vt 1 0", "vt 1 1"]
    for k, name in enumerate(names):  # one triangle per material, 1 m apart along OBJ z (-y)
        z = float(k)
        lines += [f"v 0 0 {z}", f"v 1 0 {z}", f"v 0 1 {z + 0.5}", f"usemtl {name}",
                  f"f {3 * k + 1}/1 {3 * k + 2}/2 {3 * k + 3}/3"]
    (tmp_path / "kobs.obj").write_text("\n".join(lines) + "\n")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    try:
        spec = parse_spec({"schema": 1, "name": "u", "car": {"body": "model", "model_file": "kobs.obj",
                                                              "paint_material": "carPaint"},
                           "paint": {"color": "blue"}}, tmp_path)
        row = sample_row(spec, 0)
        scene_mod.apply_row(row, spec)
        mats = {m.name: m for m in scene_mod._model_materials(bpy.data.objects[scene_mod.MODEL_ROOT])}
        parts = {n: MASK_PARTS[mats[n].pass_index] for n in names}
        assert parts == {"carPaint": "body", "GLASS_headlights": "lights", "glass": "glass",
                         "black_rubber": "wheels", "neumaticos": "wheels"}
        paint = scene_mod._principled(mats["carPaint"])
        assert not paint.inputs["Base Color"].is_linked  # the texture no longer hides the paint
        assert tuple(paint.inputs["Base Color"].default_value)[:3] == pytest.approx(
            (row["paint.color_r"], row["paint.color_g"], row["paint.color_b"]))
        glass = scene_mod._principled(mats["glass"])
        assert glass.inputs["Alpha"].default_value == 1.0 and not glass.inputs["Alpha"].is_linked
        assert max(glass.inputs["Base Color"].default_value[:3]) < 0.05  # dark, like carprobe's glass
    finally:
        bpy.ops.wm.read_factory_settings(use_empty=True)
