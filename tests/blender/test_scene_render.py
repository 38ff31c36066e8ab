"""The bpy layer: car meshes, apply_row (drift-free, flat data-block counts), user models, and
real Cycles renders of tiny images with part masks. Runs in the bpy pytest process."""

from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import bpy
import pytest
from mathutils import Vector

from blender_addon.blender import cars as car_builder
from blender_addon.blender import scene as scene_mod
from blender_addon.blender.render import make_image_renderer, render_spec
from blender_addon.core import cars as core_cars
from blender_addon.core.errors import CarprobeError
from blender_addon.core.sampling import sample_count, sample_row
from blender_addon.core.schema import MASK_PARTS
from blender_addon.core.spec import parse_spec

TINY = {"width": 64, "height": 64, "samples": 4}


@pytest.fixture
def fresh():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy.context.scene
    bpy.ops.wm.read_factory_settings(use_empty=True)


def make_spec(tmp_path=None, render=None, **groups):
    data = {"schema": 1, "name": "t", "design": {"kind": "grid"}, "render": {**TINY, **(render or {})}}
    for path, value in groups.items():
        group, name = path.split("__")
        data.setdefault(group, {})[name] = value
    return parse_spec(data, tmp_path)


def read_png_gray(path: Path) -> tuple[int, int, bytes]:
    """Decode an 8-bit greyscale, non-interlaced PNG (what the mask writer produces)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        n, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if tag == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert (depth, ctype) == (8, 0)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    rows = [raw[y * (w + 1):(y + 1) * (w + 1)] for y in range(h)]
    assert all(r[0] == 0 for r in rows)  # filter type None
    return w, h, b"".join(r[1:] for r in rows)


# --- car meshes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body,seed", [("sedan", 0), ("van", 5), ("pickup", 11), ("coupe", 3)])
def test_car_mesh_matches_its_shape(fresh, body, seed):
    shape = core_cars.car_shape(body, seed)
    mesh = car_builder.build_mesh(shape, "test-car")
    xs, ys, zs = ([v.co[i] for v in mesh.vertices] for i in range(3))
    assert min(zs) == pytest.approx(0.0, abs=1e-4)  # tyres touch the ground, nothing below
    assert max(zs) == pytest.approx(shape.height, abs=0.03)
    assert -shape.length / 2 - 0.03 <= min(ys) < -shape.length / 2 + 0.01
    assert shape.length / 2 - 0.01 < max(ys) <= shape.length / 2 + 0.03
    assert shape.width / 2 - 0.01 < max(xs) <= shape.width / 2 + 0.12  # mirrors stick out a little
    assert min(xs) == pytest.approx(-max(xs), abs=1e-6)
    names = [m.name for m in mesh.materials]
    assert names.count("carprobe.Paint") == 1 and len(names) == len(car_builder.SLOTS)
    used = {mesh.materials[p.material_index].name for p in mesh.polygons}
    assert used == {car_builder.material_name(s) for s in car_builder.SLOTS}
    parts = {m.name: MASK_PARTS[m.pass_index] for m in mesh.materials}
    assert parts["carprobe.Paint"] == "body" and parts["carprobe.Glass"] == "glass"
    assert parts["carprobe.Tyre"] == parts["carprobe.Rim"] == "wheels"
    # Each wheel: its tyre reaches the ground and stays within radius of the centre.
    tyre = car_builder.SLOTS.index("Tyre")
    for cx, cy, cz in shape.wheel_centres():
        pts = [mesh.vertices[i].co for p in mesh.polygons if p.material_index == tyre for i in p.vertices
               if abs(mesh.vertices[i].co.y - cy) <= shape.wheel_radius + 1e-6
               and (mesh.vertices[i].co.x > 0) == (cx > 0)]
        assert min(p.z for p in pts) == pytest.approx(0.0, abs=1e-4)
        assert max((Vector(p) - Vector((p.x, cy, cz))).length for p in pts) <= shape.wheel_radius + 1e-5
    assert all(p.normal.length > 0.5 for p in mesh.polygons)  # no degenerate faces
    bpy.data.meshes.remove(mesh)


# --- apply_row ----------------------------------------------------------------------------------

def snapshot(scene) -> dict:
    """Everything apply_row controls, as plain values."""
    def r(v):
        return tuple(round(x, 5) for x in v)

    objs = {}
    for o in sorted(bpy.data.collections["carprobe"].all_objects, key=lambda o: o.name):
        objs[o.name] = (o.type, o.data.name if o.data else None, tuple(r(row) for row in o.matrix_world),
                        o.hide_render, o.pass_index, o.parent.name if o.parent else None,
                        len(o.data.vertices) if o.type == "MESH" else None)
    mats = {}
    for m in bpy.data.materials:
        vals = []
        if m.node_tree:
            for n in m.node_tree.nodes:
                for i in n.inputs:
                    if hasattr(i, "default_value"):
                        dv = i.default_value
                        vals.append((n.name, i.identifier, r(dv) if hasattr(dv, "__len__") else round(dv, 5)))
        mats[m.name] = (m.pass_index, tuple(vals))
    lights = {lt.name: (lt.type, round(lt.energy, 4), r(lt.color)) for lt in bpy.data.lights}
    world = scene.world
    wnodes = sorted((n.bl_idname, tuple((i.identifier, r(i.default_value) if hasattr(i.default_value, "__len__")
                                         else round(i.default_value, 5)) for i in n.inputs
                                        if hasattr(i, "default_value")),
                     n.image.filepath if getattr(n, "image", None) else None) for n in world.node_tree.nodes)
    wlinks = sorted((lk.from_node.bl_idname, lk.from_socket.identifier, lk.to_node.bl_idname,
                     lk.to_socket.identifier) for lk in world.node_tree.links)
    rs = scene.render
    render = (rs.engine, rs.resolution_x, rs.resolution_y, rs.film_transparent, rs.image_settings.file_format,
              rs.image_settings.color_mode, scene.cycles.samples, scene.cycles.seed, scene.cycles.use_denoising,
              scene.camera.name, round(scene.camera.data.lens, 5))
    return {"objects": objs, "materials": mats, "lights": lights, "world": (world.name, wnodes, wlinks),
            "render": render, "counts": block_counts()}


def block_counts() -> dict:
    kinds = ("objects", "meshes", "materials", "images", "lights", "cameras", "worlds", "collections",
             "node_groups", "textures")
    return {k: len(getattr(bpy.data, k)) for k in kinds}


VARIED = dict(car__body={"values": ["sedan", "pickup"]}, car__shape_seed={"values": [1, 9]},
              paint__color={"values": ["red", "blue"]}, paint__metallic={"values": [0.1, 0.9]},
              lighting__kind={"values": ["sun", "hdri", "studio"]},
              lighting__temperature={"values": [3000.0, 9000.0]},
              background__kind={"values": ["color", "hdri", "transparent", "sky"]},
              background__ground={"values": [True, False]}, camera__azimuth={"values": [0.0, 140.0]})


def test_apply_row_after_another_equals_fresh(fresh):
    spec = make_spec(**VARIED)
    n = sample_count(spec)
    pairs = [(0, n - 1), (n - 1, 0), (5, 77), (200, 3)]
    for i, j in pairs:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene_mod.apply_row(sample_row(spec, j), spec)
        want = snapshot(bpy.context.scene)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene_mod.apply_row(sample_row(spec, i), spec)
        first = snapshot(bpy.context.scene)
        scene_mod.apply_row(sample_row(spec, j), spec)
        got = snapshot(bpy.context.scene)
        assert got == want, (i, j)
        assert first["objects"] != want["objects"] and first["world"] != want["world"]  # rows really differ


def test_camera_only_change_keeps_the_car_mesh(fresh):
    spec = make_spec(camera__azimuth={"values": [0.0, 90.0]})
    scene_mod.apply_row(sample_row(spec, 0), spec)
    mesh = bpy.data.objects["carprobe.car"].data
    mesh["marker"] = 1
    cam_before = bpy.data.objects["carprobe.camera"].matrix_world.copy()
    scene_mod.apply_row(sample_row(spec, 1), spec)
    assert bpy.data.objects["carprobe.car"].data.get("marker") == 1  # same data block, not rebuilt
    assert bpy.data.objects["carprobe.camera"].matrix_world != cam_before


def test_user_objects_untouched_and_clear_scene(fresh):
    user = bpy.data.objects.new("UserThing", bpy.data.meshes.new("UserMesh"))
    fresh.collection.objects.link(user)
    spec = make_spec(lighting__kind="hdri", background__kind="hdri")
    scene_mod.apply_row(sample_row(spec, 0), spec)
    assert user.name in fresh.collection.objects and "carprobe" in fresh.collection.children
    scene_mod.clear_scene(fresh)
    assert not [b for b in bpy.data.objects if b.name.startswith("carprobe")]
    assert not [b for b in bpy.data.meshes if b.name.startswith("carprobe")]
    assert not [b for b in bpy.data.images if b.name.startswith("carprobe")]
    assert "UserThing" in bpy.data.objects


def test_data_block_counts_stay_flat_over_many_applies(fresh, tmp_path):
    model = write_obj(tmp_path / "boxcar.obj")
    spec = make_spec(**VARIED)
    mspec = make_spec(tmp_path, car__body="model", car__model_file=str(model), lighting__kind="hdri")
    n = sample_count(spec)
    counts = []
    for k in range(30):
        if k % 7 == 3:
            scene_mod.apply_row(sample_row(mspec, 0), mspec)
        else:
            scene_mod.apply_row(sample_row(spec, (k * 37) % n), spec)
        if k % 7 == 0:  # count after the same reference sample each time
            scene_mod.apply_row(sample_row(spec, 1), spec)
            counts.append(block_counts())
    assert all(c == counts[0] for c in counts), counts


def test_blackbody_is_warm_to_cool():
    warm, white, cool = (scene_mod.blackbody(t) for t in (2500, 6500, 12000))
    assert warm[0] == 1.0 and warm[2] < 0.3
    assert min(white) > 0.9
    assert cool[2] == 1.0 and cool[0] < 0.8


# --- user models ----------------------------------------------------------------------------------

def write_obj(path: Path) -> Path:
    """A 4 x 1.8 x 1.4 box 'car' standing off-centre, painted 'Paint', with a 'Window' face."""
    mtl = path.with_suffix(".mtl")
    mtl.write_text("newmtl Paint\nKd 0.5 0.5 0.5\nnewmtl Window_glass\nKd 0.1 0.1 0.1\n")
    # OBJ is y-up; the importer turns it z-up. Box from (1, 0.3, 2) to (2.8, 1.7, 6).
    v = [(x, y, z) for x in (1.0, 2.8) for y in (0.3, 1.7) for z in (2.0, 6.0)]
    faces = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5)]
    lines = [f"mtllib {mtl.name}", "o BoxCar"] + [f"v {x} {y} {z}" for x, y, z in v] + ["usemtl Paint"]
    lines += ["f " + " ".join(map(str, f)) for f in faces] + ["usemtl Window_glass", "f 2 6 8 4"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_user_model_is_imported_centred_and_painted(fresh, tmp_path):
    model = write_obj(tmp_path / "boxcar.obj")
    spec = make_spec(tmp_path, car__body="model", car__model_file="boxcar.obj", paint__color="blue",
                     paint__metallic=0.8)
    row = sample_row(spec, 0)
    scene_mod.apply_row(row, spec)
    bpy.context.view_layer.update()
    meshes = [o for o in bpy.data.collections["carprobe.model"].all_objects if o.type == "MESH"]
    assert len(meshes) == 1
    pts = [meshes[0].matrix_world @ Vector(c) for c in meshes[0].bound_box]
    assert min(p.z for p in pts) == pytest.approx(0.0, abs=1e-5)
    assert (min(p.x for p in pts) + max(p.x for p in pts)) == pytest.approx(0.0, abs=1e-5)
    assert (min(p.y for p in pts) + max(p.y for p in pts)) == pytest.approx(0.0, abs=1e-5)
    paint = next(m for m in meshes[0].data.materials if m.name.startswith("Paint"))
    bsdf = next(n for n in paint.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    assert tuple(bsdf.inputs["Base Color"].default_value)[:3] == pytest.approx(
        (row["paint.color_r"], row["paint.color_g"], row["paint.color_b"]))
    assert bsdf.inputs["Metallic"].default_value == pytest.approx(0.8)
    glass = next(m for m in meshes[0].data.materials if m.name.startswith("Window"))
    assert MASK_PARTS[paint.pass_index] == "body" and MASK_PARTS[glass.pass_index] == "glass"
    assert "carprobe.car" not in bpy.data.objects
    # Back to a procedural car: the model and everything it brought are gone.
    scene_mod.apply_row(sample_row(make_spec(), 0), make_spec())
    assert "carprobe.model" not in bpy.data.collections
    assert not [m for m in bpy.data.materials if m.name.startswith(("Paint", "Window"))]
    assert model.exists()


def test_user_model_errors_name_the_field(fresh, tmp_path):
    write_obj(tmp_path / "boxcar.obj")
    spec = make_spec(tmp_path, car__body="model", car__model_file="boxcar.obj", car__paint_material="Lacquer")
    with pytest.raises(CarprobeError, match=r"car.paint_material.*'Lacquer'.*Paint"):
        scene_mod.apply_row(sample_row(spec, 0), spec)
    row = dict(sample_row(spec, 0), **{"car.model_file": str(tmp_path / "gone.obj")})
    with pytest.raises(CarprobeError, match="car.model_file.*gone.obj"):
        scene_mod.apply_row(row, spec)
    bad = tmp_path / "bad.hdr"
    bad.write_bytes(b"not an image")
    hspec = make_spec(tmp_path, lighting__kind="hdri", lighting__hdri="bad.hdr")
    with pytest.raises(CarprobeError, match="lighting.hdri.*bad.hdr"):
        scene_mod.apply_row(sample_row(hspec, 0), hspec)


# --- real renders ------------------------------------------------------------------------------

def test_render_set_with_masks(fresh, tmp_path):
    spec = make_spec(render={"masks": True}, car__body={"values": ["sedan", "suv", "van"]},
                     background__kind="sky", camera__elevation=10.0)
    out = tmp_path / "set"
    render_spec(spec, out, progress=False)
    with open(out / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["car.body"] for r in rows] == ["sedan", "suv", "van"]
    for r in rows:
        assert (out / r["file_name"]).stat().st_size > 500
        w, h, ids = read_png_gray(out / r["mask_file_name"])
        assert (w, h) == (64, 64)
        present = {MASK_PARTS[i] for i in set(ids)}
        assert {"background", "body", "glass", "wheels", "ground"} <= present, present
        assert max(ids) < len(MASK_PARTS)
        # The car sits in the middle: the centre pixel is car, the top-left corner is sky.
        assert MASK_PARTS[ids[32 * 64 + 32]] in ("body", "glass") and ids[0] == 0
    img = bpy.data.images.load(str(out / rows[0]["file_name"]))
    assert tuple(img.size) == (64, 64)
    bpy.data.images.remove(img)


def test_same_row_renders_the_same_image(fresh, tmp_path):
    spec = make_spec(lighting__kind="sun")
    render = make_image_renderer(spec)
    row = sample_row(spec, 0)
    pixels = []
    for k in range(2):
        path = tmp_path / f"img{k}.png"
        render(row, path, None)
        img = bpy.data.images.load(str(path))
        pixels.append(list(img.pixels))
        bpy.data.images.remove(img)
    assert max(abs(a - b) for a, b in zip(*pixels)) <= 1.0 / 255 + 1e-6
    other = dict(row, seed=row["seed"] + 1)
    render(other, tmp_path / "img2.png", None)
    img = bpy.data.images.load(str(tmp_path / "img2.png"))
    assert list(img.pixels) != pixels[0]  # the seed really drives the noise
    bpy.data.images.remove(img)


def test_every_body_renders_in_its_paint_colour_in_the_startup_scene(tmp_path):
    """Side views of every body type, rendered from Blender's startup file (default cube and
    point light, as every headless render starts) in a saturated green on a flat magenta
    background: nearly all body pixels are paint-green, and every background pixel is the
    background colour (nothing outside carprobe's collection is rendered)."""
    import colorsys

    import numpy as np

    bpy.ops.wm.read_factory_settings()  # not empty: Cube, Light, Camera
    assert "Cube" in bpy.context.scene.objects
    try:
        bodies = list(core_cars.BODY_TYPES)
        spec = make_spec(render={"masks": True, "width": 96, "height": 48}, car__body={"values": bodies},
                         paint__color="rgb(0.05, 0.6, 0.05)", paint__metallic=0.0, paint__coat=0.0, paint__roughness=0.8,
                         lighting__kind="studio", camera__azimuth=90.0, camera__elevation=5.0,
                         camera__distance=9.0, background__kind="color", background__color="rgb(0.5, 0.0, 0.5)",
                         background__ground=False)
        out = tmp_path / "set"
        render_spec(spec, out, progress=False)
        assert not bpy.data.objects["Cube"].hide_render  # left as it was
        with open(out / "metadata.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["car.body"] for r in rows] == bodies
        body_id, bg_id = MASK_PARTS.index("body"), MASK_PARTS.index("background")
        for r in rows:
            w, h, raw = read_png_gray(out / r["mask_file_name"])
            ids = np.frombuffer(raw, dtype=np.uint8).reshape(h, w)
            img = bpy.data.images.load(str(out / r["file_name"]))
            rgb = np.array(img.pixels[:], dtype=np.float32).reshape(h, w, 4)[::-1, :, :3]  # top row first
            bpy.data.images.remove(img)
            # Pixels whose 3x3 neighbourhood is one part (the image is filtered, the mask is not).
            pad = np.pad(ids, 1, mode="edge")
            same = np.all([pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] == ids
                           for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
            body = rgb[same & (ids == body_id)]
            assert len(body) > 0.08 * w * h, (r["car.body"], len(body))
            hsv = np.array([colorsys.rgb_to_hsv(*p) for p in body])
            green = (np.abs(hsv[:, 0] - 1 / 3) < 0.08) & (hsv[:, 1] > 0.4)
            assert green.mean() > 0.95, (r["car.body"], green.mean())
            background = rgb[same & (ids == bg_id)]
            off = np.abs(background - rgb[0, 0]).max(axis=1) > 0.03
            assert rgb[0, 0][1] < 0.05 < rgb[0, 0][0] and not off.any(), (r["car.body"], int(off.sum()))
    finally:
        bpy.ops.wm.read_factory_settings(use_empty=True)


def test_render_threads_reach_the_scene(fresh, tmp_path):
    spec = make_spec()
    render_spec(spec, tmp_path / "fixed", progress=False, threads=1)  # what a worker process runs
    assert (fresh.render.threads_mode, fresh.render.threads) == ("FIXED", 1)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    make_image_renderer(spec)(sample_row(spec, 0), tmp_path / "auto.png", None)  # a single process
    assert bpy.context.scene.render.threads_mode == "AUTO"


def test_k_and_rt_reproject_the_cars_box_onto_the_mask_box(fresh, tmp_path):
    """The OpenCV camera columns agree with what Blender rendered: the car's 3-D box corners,
    projected with K and [R|t], enclose the mask's box of car pixels, and the projected mesh
    vertices span that box to a pixel."""
    import json

    from blender_addon.core.mask_box import mask_bbox

    # non-square, off-axis views: a swapped fx/fy, cx/cy, a flipped axis or a transposed R would show
    spec = make_spec(render={"masks": True, "width": 64, "height": 40, "samples": 1},
                     camera__azimuth={"values": [35.0, 215.0]}, camera__elevation=20.0,
                     camera__distance=10.0, background__kind="sky")
    render = make_image_renderer(spec)

    def project(points, K, Rt):
        us, vs = [], []
        for p in points:
            cam = [sum(Rt[r][c] * p[c] for c in range(3)) + Rt[r][3] for r in range(3)]
            assert cam[2] > 0  # in front of the camera
            us.append((K[0][0] * cam[0] + K[0][2] * cam[2]) / cam[2])
            vs.append((K[1][1] * cam[1] + K[1][2] * cam[2]) / cam[2])
        return min(us), min(vs), max(us), max(vs)

    for index in range(sample_count(spec)):
        row = sample_row(spec, index)
        told = render(row, tmp_path / f"{index}.png", tmp_path / f"{index}-mask.png")
        x0, y0, x1, y1 = mask_bbox(tmp_path / f"{index}-mask.png")
        assert told == {"bbox": (x0, y0, x1, y1)}  # the box the render loop records, from the ids in memory
        # K's pixel-centre convention: pixel i spans [i - 0.5, i + 0.5]
        edges = (x0 - 0.5, y0 - 0.5, x1 - 0.5, y1 - 0.5)
        K, Rt = json.loads(row["camera.K"]), json.loads(row["camera.Rt"])
        car = bpy.data.objects[scene_mod.CAR]
        corners = project([car.matrix_world @ Vector(c) for c in car.bound_box], K, Rt)
        assert -0.5 < corners[0] and corners[2] < 63.5 and -0.5 < corners[1] and corners[3] < 39.5  # all in view
        tol = 1.0
        assert corners[0] <= edges[0] + tol and corners[1] <= edges[1] + tol, (index, corners, edges)
        assert corners[2] >= edges[2] - tol and corners[3] >= edges[3] - tol, (index, corners, edges)
        vertices = project([car.matrix_world @ v.co for v in car.data.vertices], K, Rt)
        for got, want in zip(vertices, edges):
            assert abs(got - want) <= 1.5, (index, vertices, edges)


def test_mask_wiring_is_checked_before_every_image(fresh, tmp_path):
    """The compositor is wired once per set, not per image; anything that breaks the wiring
    between two images (a muted or unlinked output, the pass switched off, another folder) is
    rewired, so every mask stays that of its own image."""
    spec = make_spec(render={"masks": True, "samples": 1}, car__body={"values": ["sedan", "suv"]})
    render = make_image_renderer(spec, scratch_root=tmp_path / "set")
    (tmp_path / "set").mkdir()
    row = sample_row(spec, 0)
    render(row, tmp_path / "a.png", tmp_path / "a-mask.png")
    expected = read_png_gray(tmp_path / "a-mask.png")
    assert len(set(expected[2])) > 2  # car parts and background
    scene = bpy.context.scene

    def output():
        return next(n for n in scene.node_tree.nodes if n.type == "OUTPUT_FILE")

    breakages = {
        "muted": lambda: setattr(output(), "mute", True),
        "unlinked": lambda: scene.node_tree.links.remove(output().inputs[0].links[0]),
        "pass off": lambda: setattr(scene.view_layers[0], "use_pass_material_index", False),
        "compositing off": lambda: setattr(scene.render, "use_compositing", False),
        "other folder": lambda: setattr(output(), "base_path", str(tmp_path / "elsewhere") + "/"),
    }
    for name, breakage in breakages.items():
        breakage()
        render(row, tmp_path / f"{name}.png", tmp_path / f"{name}-mask.png")
        assert read_png_gray(tmp_path / f"{name}-mask.png") == expected, name
    assert not (tmp_path / "elsewhere").exists()
