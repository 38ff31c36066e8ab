"""Make the current Blender scene show one sample (a metadata row): `apply_row(row, spec)`.

Everything carprobe adds lives in the `carprobe` collection (car, lights, ground, camera) or in
data blocks named `carprobe.*` (world, materials, images), so the user's own objects are left
alone. Idempotent and drift-free: every value a row controls is set on every call, objects that
a sample does not need are hidden (lights, ground) or removed with their data (car mesh, user
model), and data blocks are reused by name; so applying j after i gives the same scene as j on a
fresh scene, and memory stays flat over many samples. The car mesh is cached by identity (body,
shape seed, shape overrides): camera-, paint- or light-only changes do not rebuild it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import bpy
from mathutils import Matrix, Vector

from ..core import car_models
from ..core import cars as core_cars
from ..core.errors import CarprobeError
from ..core.schema import MASK_PARTS
from ..core.spec import require_file
from . import cars as car_builder

COLLECTION = "carprobe"
MODEL_COLLECTION = "carprobe.model"
P = "carprobe."
CAR = P + "car"
MODEL_ROOT = P + "model_root"
CAMERA = P + "camera"
GROUND = P + "ground"
WORLD = P + "world"
LIGHTS = {  # name -> (type, azimuth, elevation, distance, size, relative power)
    "sun": ("SUN", 0, 0, 0, 0, 1.0),
    "key": ("AREA", -40.0, 35.0, 7.0, 2.5, 1.0),
    "fill": ("AREA", 55.0, 15.0, 7.0, 3.0, 0.35),
    "back": ("AREA", 170.0, 45.0, 7.0, 2.0, 0.6),
}
STUDIO_KEY_WATTS = 700.0  # key light power at studio_strength = 1
SKY_ZENITH = (0.20, 0.38, 0.80)
SKY_HORIZON = (0.70, 0.80, 0.95)
SKY_GROUND = (0.25, 0.23, 0.21)
GROUND_COLOR = (0.30, 0.30, 0.30)

# Blender ≥ 4.2 renamed EEVEE to EEVEE Next; 5.0 renamed it back.
ENGINE_IDS = {"cycles": "CYCLES", "workbench": "BLENDER_WORKBENCH",
              "eevee": "BLENDER_EEVEE" if bpy.app.version >= (5, 0, 0) else "BLENDER_EEVEE_NEXT"}



# --- entry point ----------------------------------------------------------------------------

def apply_row(row: dict[str, Any], spec, scene: bpy.types.Scene | None = None) -> None:
    """Make `scene` (default: the context scene) show the sample described by `row`.

    row: a metadata row (core.sampling.sample_row); spec: the core.spec.Spec it came from
    (render settings, file resolution). Raises CarprobeError for missing or unusable files.
    """
    scene = scene or bpy.context.scene
    coll = _collection(scene)
    paint = _apply_car(row, spec, scene, coll)
    _apply_paint(paint, row)
    _apply_lights(row, coll)
    _apply_world(row, spec, scene)
    _apply_ground(row, coll)
    _apply_camera(row, scene, coll)
    _apply_render(row, spec, scene)


def clear_scene(scene: bpy.types.Scene | None = None) -> None:
    """Remove everything apply_row added (objects, data blocks, the world) from the file."""
    scene = scene or bpy.context.scene
    prev = scene.get("carprobe_previous_world", "")
    _remove_model()
    coll = bpy.data.collections.get(COLLECTION)
    if coll is not None:
        for obj in list(coll.all_objects):
            _remove_object(obj)
        bpy.data.collections.remove(coll)
    if scene.world is not None and scene.world.name == WORLD:
        scene.world = bpy.data.worlds.get(prev) if prev else None
    for attr in ("worlds", "materials", "images", "meshes", "lights", "cameras"):
        blocks = getattr(bpy.data, attr)
        for block in [b for b in blocks if b.name.startswith(P)]:
            blocks.remove(block)
    if "carprobe_previous_world" in scene:
        del scene["carprobe_previous_world"]


# --- helpers ---------------------------------------------------------------------------------

def _f(row: dict, key: str) -> float:
    return float(row[key])


def _collection(scene) -> bpy.types.Collection:
    coll = bpy.data.collections.get(COLLECTION)
    if coll is None:
        coll = bpy.data.collections.new(COLLECTION)
    if coll.name not in scene.collection.children:
        scene.collection.children.link(coll)
    return coll


def _object(name: str, data, coll) -> bpy.types.Object:
    obj = bpy.data.objects.get(name)
    if obj is None:
        obj = bpy.data.objects.new(name, data)
    if obj.name not in coll.objects:
        coll.objects.link(obj)
    return obj


def _remove_object(obj) -> None:
    data = obj.data
    bpy.data.objects.remove(obj)
    if data is not None and data.users == 0:
        for attr in ("meshes", "lights", "cameras", "curves"):
            blocks = getattr(bpy.data, attr)
            if data.name in blocks and blocks[data.name] == data:
                blocks.remove(data)
                break


def _load_image(name: str, path: Path, field: str) -> bpy.types.Image:
    """The image data block `name` showing file `path` (reused; reloaded when the file changes)."""
    img = bpy.data.images.get(name)
    fp = str(path)
    try:
        if img is None:
            img = bpy.data.images.load(fp)
            img.name = name
        elif bpy.path.abspath(img.filepath) != fp:
            img.filepath = fp
            img.reload()
        if img.size[0] == 0:  # Blender loads lazily; a zero size means it could not be read
            img.reload()
            if not img.has_data and img.size[0] == 0:
                raise RuntimeError("no pixels")
    except RuntimeError as exc:
        if img is not None:
            bpy.data.images.remove(img)
        raise CarprobeError(f"{field}: cannot read image {fp}: {exc}; allowed: a readable "
                            f"{'.exr/.hdr' if 'hdri' in field else '.png/.jpg'} file") from None
    return img


def blackbody(kelvin: float) -> tuple[float, float, float]:
    """Linear RGB of a black body at `kelvin` (Tanner Helland's fit), brightest channel = 1."""
    t = max(1000.0, min(40000.0, kelvin)) / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = 99.4708025861 * math.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * (t - 60) ** -0.0755148492
    b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * math.log(t - 10) - 305.0447927307)
    srgb = [min(255.0, max(0.0, c)) / 255.0 for c in (r, g, b)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in srgb]
    m = max(lin)
    return (lin[0] / m, lin[1] / m, lin[2] / m)


def _direction(azimuth: float, elevation: float) -> Vector:
    """Unit vector from the origin towards (azimuth, elevation), camera convention (core.camera)."""
    az, el = math.radians(azimuth), math.radians(elevation)
    return Vector((math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), math.sin(el)))


# --- car ---------------------------------------------------------------------------------------

def _apply_car(row, spec, scene, coll) -> bpy.types.Material:
    body = row["car.body"]
    overrides = {k: _f(row, "car." + k) for k in ("length", "width", "height", "wheel_scale")}
    if body == "model" or car_models.shipped_car(body) is not None:
        car = bpy.data.objects.get(CAR)
        if car is not None:
            _remove_object(car)
        return _apply_model(row, spec, scene, coll, overrides)
    _remove_model()
    seed = int(row["car.shape_seed"])
    key = json.dumps([body, seed, overrides], sort_keys=True)
    car = bpy.data.objects.get(CAR)
    if car is None or car.data is None or car.data.get("carprobe_key") != key:
        shape = core_cars.car_shape(body, seed, overrides)
        mesh = car_builder.build_mesh(shape, P + "car.new")
        mesh["carprobe_key"] = key
        if car is None:
            car = _object(CAR, mesh, coll)
        else:
            old = car.data
            car.data = mesh
            bpy.data.meshes.remove(old)
        mesh.name = P + "car." + shape.car_id
    if car.name not in coll.objects:
        coll.objects.link(car)
    car.matrix_world = Matrix.Identity(4)
    car.pass_index = MASK_PARTS.index("body")
    return car_builder.ensure_material("Paint")


def _model_key(path: Path, paint_name: str, yaw: float, length: float) -> str:
    st = path.stat()
    return json.dumps([str(path), st.st_mtime_ns, st.st_size, paint_name, yaw, length])


def _apply_model(row, spec, scene, coll, overrides) -> bpy.types.Material:
    path, paint_name, yaw, length = car_models.model_source(row, spec)
    suffix = path.suffix.lower()
    allowed = (".blend", ".glb", ".gltf", ".fbx", ".obj")
    if suffix not in allowed:
        raise CarprobeError(f"car.model_file: {path} has an unsupported suffix; allowed: {', '.join(allowed)}")
    key = _model_key(path, paint_name, yaw, length)
    root = bpy.data.objects.get(MODEL_ROOT)
    if root is None or root.get("carprobe_key") != key:
        _remove_model()
        root = _import_model(path, suffix, scene, coll)
        root["carprobe_key"] = key
        _normalise_model(root, length, yaw)
    mats = _model_materials(root)
    paint = next((m for m in mats if m.name == paint_name), None) or \
        next((m for m in mats if m.name.rsplit(".", 1)[0] == paint_name), None)
    if paint is None:
        names = ", ".join(sorted(m.name for m in mats)) or "none"
        raise CarprobeError(f"car.paint_material: no material named {paint_name!r} in {path}; "
                            f"its materials: {names}")
    if _principled(paint) is None:
        raise CarprobeError(f"car.paint_material: material {paint.name!r} in {path} has no Principled BSDF node "
                            f"to drive the paint colour; allowed: a material with a Principled BSDF")
    for m in mats:  # mask part ids by material (Cycles material-index pass)
        part = "body" if m == paint else car_models.part_of_material(m.name)
        m.pass_index = MASK_PARTS.index(part)
        if part == "glass":
            _make_glass_opaque(m)
    _unlink_input(paint, "Base Color")  # a painted texture would hide the paint colour
    return paint


def _unlink_input(mat, socket: str) -> None:
    bsdf = _principled(mat)
    if bsdf is not None:
        for link in list(bsdf.inputs[socket].links):
            mat.node_tree.links.remove(link)


def _make_glass_opaque(mat) -> None:
    """Model glass as carprobe's own: opaque dark tinted, all reflection. See-through glass would
    show the interior (a speckled glass mask, and the interior in the image)."""
    glass = car_builder.MATERIALS["Glass"]
    bsdf = _principled(mat)
    if bsdf is None:  # not a node material we understand: replace its surface by a plain BSDF
        mat.use_nodes = True
        nodes = mat.node_tree.nodes
        nodes.clear()
        bsdf = nodes.new("ShaderNodeBsdfPrincipled")
        out = nodes.new("ShaderNodeOutputMaterial")
        mat.node_tree.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    for socket in ("Base Color", "Alpha", "Transmission Weight", "Roughness", "Metallic"):
        _unlink_input(mat, socket)
    bsdf.inputs["Base Color"].default_value = (*glass[1], 1.0)
    bsdf.inputs["Metallic"].default_value = glass[2]
    bsdf.inputs["Roughness"].default_value = glass[3]
    bsdf.inputs["Alpha"].default_value = 1.0
    bsdf.inputs["Transmission Weight"].default_value = 0.0
    bsdf.inputs["Specular IOR Level"].default_value = 1.0
    mat.diffuse_color = (*glass[1], 1.0)
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = "DITHERED"  # EEVEE: opaque, depth-tested
    if hasattr(mat, "blend_method"):
        mat.blend_method = "OPAQUE"


def _model_materials(root) -> list[bpy.types.Material]:
    out = []
    for obj in [root, *root.children_recursive]:
        for slot in getattr(obj, "material_slots", ()):
            if slot.material is not None and slot.material not in out:
                out.append(slot.material)
    return out


def _principled(mat):
    if not mat.use_nodes or mat.node_tree is None:
        return None
    return next((n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None)


_BLOCK_KINDS = ("objects", "meshes", "materials", "images", "textures", "node_groups", "armatures", "actions",
                "curves", "cameras", "lights", "collections")


def _import_model(path: Path, suffix: str, scene, coll) -> bpy.types.Object:
    before = {k: set(getattr(bpy.data, k)) for k in _BLOCK_KINDS}
    mcoll = bpy.data.collections.new(MODEL_COLLECTION)
    coll.children.link(mcoll)
    try:
        if suffix == ".blend":
            with bpy.data.libraries.load(str(path), link=False) as (src, dst):
                dst.objects = list(src.objects)
            for obj in dst.objects:
                if obj is not None and obj.type not in ("CAMERA", "LIGHT"):
                    mcoll.objects.link(obj)
        else:
            _import_with_operator(path, suffix, scene, mcoll)
    except CarprobeError:
        raise
    except Exception as exc:  # importer errors: report the file, not a traceback
        _remove_new_blocks(before)
        raise CarprobeError(f"car.model_file: could not import {path}: {exc}") from None
    new_objs = [o for o in bpy.data.objects if o not in before["objects"]]
    for obj in new_objs:  # importers may link elsewhere; cameras/lights of the model are dropped
        if obj.type in ("CAMERA", "LIGHT"):
            bpy.data.objects.remove(obj)
            continue
        for c in list(obj.users_collection):
            if c != mcoll:
                c.objects.unlink(obj)
        if obj.name not in mcoll.objects:
            mcoll.objects.link(obj)
    root = bpy.data.objects.new(MODEL_ROOT, None)
    mcoll.objects.link(root)
    for obj in list(mcoll.objects):
        if obj != root and obj.parent is None:
            obj.parent = root
    if not any(o.type == "MESH" for o in mcoll.all_objects):
        _remove_model()
        raise CarprobeError(f"car.model_file: {path} contains no mesh objects")
    created = {k: sorted(b.name for b in getattr(bpy.data, k) if b not in before[k]) for k in _BLOCK_KINDS}
    mcoll["carprobe_blocks"] = json.dumps(created)
    return root


def _import_with_operator(path: Path, suffix: str, scene, mcoll) -> None:
    view_layer = bpy.context.view_layer
    layer = _find_layer_collection(view_layer.layer_collection, mcoll.name)
    prev = view_layer.active_layer_collection
    if layer is not None:
        view_layer.active_layer_collection = layer
    try:
        if suffix in (".glb", ".gltf"):
            res = bpy.ops.import_scene.gltf(filepath=str(path))
        elif suffix == ".fbx":
            res = bpy.ops.import_scene.fbx(filepath=str(path))
        else:
            res = bpy.ops.wm.obj_import(filepath=str(path))
    finally:
        view_layer.active_layer_collection = prev
    if "FINISHED" not in res:
        raise CarprobeError(f"car.model_file: the importer did not read {path}")


def _find_layer_collection(layer, name):
    if layer.collection.name == name:
        return layer
    for child in layer.children:
        found = _find_layer_collection(child, name)
        if found is not None:
            return found
    return None


def _normalise_model(root, length: float, yaw: float = 0.0) -> None:
    """Turn the model by `yaw` degrees about z, centre it on the origin and stand it on the
    ground; scale it to `length` (its extent along y after the turn) if > 0."""
    root.rotation_euler = (0.0, 0.0, math.radians(yaw))
    root.scale = (1.0, 1.0, 1.0)
    root.location = (0.0, 0.0, 0.0)
    bpy.context.view_layer.update()
    pts = []
    for obj in root.children_recursive:
        if obj.type == "MESH":
            pts += [obj.matrix_world @ Vector(c) for c in obj.bound_box]
    lo = Vector((min(p.x for p in pts), min(p.y for p in pts), min(p.z for p in pts)))
    hi = Vector((max(p.x for p in pts), max(p.y for p in pts), max(p.z for p in pts)))
    scale = length / max(1e-9, hi.y - lo.y) if length > 0 else 1.0
    root.scale = (scale, scale, scale)
    root.location = (-scale * (lo.x + hi.x) / 2, -scale * (lo.y + hi.y) / 2, -scale * lo.z)


def _remove_new_blocks(before: dict) -> None:
    for kind in _BLOCK_KINDS:
        blocks = getattr(bpy.data, kind)
        for b in [b for b in blocks if b not in before[kind]]:
            blocks.remove(b)


def _remove_model() -> None:
    mcoll = bpy.data.collections.get(MODEL_COLLECTION)
    if mcoll is None:
        return
    created = json.loads(mcoll.get("carprobe_blocks", "{}"))
    for obj in list(mcoll.all_objects):
        bpy.data.objects.remove(obj)
    bpy.data.collections.remove(mcoll)
    for kind in _BLOCK_KINDS:
        blocks = getattr(bpy.data, kind)
        for name in created.get(kind, ()):
            b = blocks.get(name)
            if b is not None:
                blocks.remove(b)


# --- paint --------------------------------------------------------------------------------------

def _apply_paint(mat, row) -> None:
    bsdf = _principled(mat)
    color = (_f(row, "paint.color_r"), _f(row, "paint.color_g"), _f(row, "paint.color_b"), 1.0)
    bsdf.inputs["Base Color"].default_value = color
    bsdf.inputs["Metallic"].default_value = _f(row, "paint.metallic")
    bsdf.inputs["Roughness"].default_value = _f(row, "paint.roughness")
    bsdf.inputs["Coat Weight"].default_value = _f(row, "paint.coat")
    mat.diffuse_color = color


# --- lights -------------------------------------------------------------------------------------

def _apply_lights(row, coll) -> None:
    kind = row["lighting.kind"]
    tint = blackbody(_f(row, "lighting.temperature"))
    for name, (ltype, az, el, dist, size, rel) in LIGHTS.items():
        full = P + name
        data = bpy.data.lights.get(full)
        if data is None:
            data = bpy.data.lights.new(full, ltype)
        obj = _object(full, data, coll)
        on = (kind == "sun") if name == "sun" else (kind == "studio")
        obj.hide_render = obj.hide_viewport = not on
        data.color = tint
        if name == "sun":
            d = _direction(_f(row, "lighting.sun_azimuth"), _f(row, "lighting.sun_elevation"))
            data.energy = _f(row, "lighting.sun_strength")
            data.angle = math.radians(2.0)  # slightly soft shadows
            obj.matrix_world = d.to_track_quat("Z", "Y").to_matrix().to_4x4()
        else:
            d = _direction(az, el)
            data.energy = STUDIO_KEY_WATTS * rel * _f(row, "lighting.studio_strength")
            data.shape = "SQUARE"
            data.size = size
            loc = Vector((0.0, 0.0, 0.6)) + d * dist
            m = d.to_track_quat("Z", "Y").to_matrix().to_4x4()
            m.translation = loc
            obj.matrix_world = m


# --- world and background --------------------------------------------------------------------------

def _apply_world(row, spec, scene) -> None:
    world = bpy.data.worlds.get(WORLD)
    if world is None:
        world = bpy.data.worlds.new(WORLD)
    if scene.world is not None and scene.world != world and "carprobe_previous_world" not in scene:
        scene["carprobe_previous_world"] = scene.world.name
    scene.world = world
    world.use_nodes = True
    nt = world.node_tree
    nt.nodes.clear()  # rebuilt every time: cheap, and no state survives from the previous sample
    N, L = nt.nodes, nt.links
    kind = row["lighting.kind"]
    bg_kind = row["background.kind"]
    tint = blackbody(_f(row, "lighting.temperature"))
    used_images = set()

    def hdri_socket(strength_factor: float = 1.0):
        img = _load_image(P + "hdri", require_file(spec, "lighting.hdri", str(row["lighting.hdri"])), "lighting.hdri")
        used_images.add(img.name)
        coord = N.new("ShaderNodeTexCoord")
        mapping = N.new("ShaderNodeMapping")
        mapping.inputs["Rotation"].default_value = (0.0, 0.0, math.radians(_f(row, "lighting.hdri_rotation")))
        env = N.new("ShaderNodeTexEnvironment")
        env.image = img
        L.new(coord.outputs["Generated"], mapping.inputs["Vector"])
        L.new(mapping.outputs["Vector"], env.inputs["Vector"])
        return env.outputs["Color"]

    def sky_socket():
        coord = N.new("ShaderNodeTexCoord")
        sep = N.new("ShaderNodeSeparateXYZ")
        ramp = N.new("ShaderNodeValToRGB")
        L.new(coord.outputs["Generated"], sep.inputs["Vector"])
        # Generated z runs -1 (down) .. 1 (up) for the world, mapped to 0..1 for the ramp:
        # ground below the horizon, horizon haze, deep blue at the zenith.
        el = ramp.color_ramp.elements
        el[0].position, el[0].color = 0.0, (*SKY_GROUND, 1.0)
        el[1].position, el[1].color = 1.0, (*SKY_ZENITH, 1.0)
        mid = el.new(0.5)
        mid.color = (*SKY_HORIZON, 1.0)
        below = el.new(0.49)
        below.color = (*SKY_GROUND, 1.0)
        map_range = N.new("ShaderNodeMapRange")
        map_range.inputs["From Min"].default_value = -1.0
        L.new(sep.outputs["Z"], map_range.inputs["Value"])
        L.new(map_range.outputs["Result"], ramp.inputs["Fac"])
        return ramp.outputs["Color"]

    def tinted(socket):
        mix = N.new("ShaderNodeMix")
        mix.data_type = "RGBA"
        mix.blend_type = "MULTIPLY"
        mix.inputs["Factor"].default_value = 1.0
        L.new(socket, mix.inputs[6])
        mix.inputs[7].default_value = (*tint, 1.0)
        return mix.outputs[2]

    # Lighting (every ray but camera rays).
    light_bg = N.new("ShaderNodeBackground")
    if kind == "hdri":
        L.new(tinted(hdri_socket()), light_bg.inputs["Color"])
        light_bg.inputs["Strength"].default_value = _f(row, "lighting.hdri_strength")
    elif kind == "sun":
        L.new(sky_socket(), light_bg.inputs["Color"])
        light_bg.inputs["Strength"].default_value = _f(row, "lighting.sky_strength")
    else:  # studio: dim neutral ambient, the area lights do the work
        light_bg.inputs["Color"].default_value = (*tint, 1.0)
        light_bg.inputs["Strength"].default_value = 0.15 * _f(row, "lighting.sky_strength")

    # What the camera sees.
    cam_bg = N.new("ShaderNodeBackground")
    cam_bg.inputs["Strength"].default_value = 1.0
    if bg_kind == "color":
        cam_bg.inputs["Color"].default_value = (_f(row, "background.color_r"), _f(row, "background.color_g"),
                                                _f(row, "background.color_b"), 1.0)
    elif bg_kind == "sky":
        L.new(sky_socket(), cam_bg.inputs["Color"])
    elif bg_kind == "hdri":
        L.new(hdri_socket(), cam_bg.inputs["Color"])
        cam_bg.inputs["Strength"].default_value = _f(row, "lighting.hdri_strength")
    elif bg_kind == "image":
        img = _load_image(P + "background", require_file(spec, "background.image", str(row["background.image"])),
                          "background.image")
        used_images.add(img.name)
        coord = N.new("ShaderNodeTexCoord")
        tex = N.new("ShaderNodeTexImage")
        tex.image = img
        tex.extension = "EXTEND"
        L.new(coord.outputs["Window"], tex.inputs["Vector"])  # fills the frame exactly
        L.new(tex.outputs["Color"], cam_bg.inputs["Color"])
    else:  # transparent: film alpha; keep the lighting as the (unseen) camera background
        cam_bg.inputs["Color"].default_value = (0.0, 0.0, 0.0, 1.0)

    path = N.new("ShaderNodeLightPath")
    mix = N.new("ShaderNodeMixShader")
    out = N.new("ShaderNodeOutputWorld")
    L.new(path.outputs["Is Camera Ray"], mix.inputs["Fac"])
    L.new(light_bg.outputs["Background"], mix.inputs[1])
    L.new(cam_bg.outputs["Background"], mix.inputs[2])
    L.new(mix.outputs["Shader"], out.inputs["Surface"])
    scene.render.film_transparent = bg_kind == "transparent"
    # Cycles bakes an importance map of a textured world before every render; at the default
    # resolution (1024) that dominates the time of small images. 512 resolves the sun of the bundled
    # 1K HDRIs (256 gave fireflies); the smooth sky gradient needs none.
    world.cycles.sampling_method = "MANUAL" if kind == "hdri" else "NONE"
    world.cycles.sample_map_resolution = 512
    for name in (P + "hdri", P + "background"):  # drop images this sample does not use
        img = bpy.data.images.get(name)
        if img is not None and name not in used_images:
            bpy.data.images.remove(img)


# --- ground ---------------------------------------------------------------------------------------

def _apply_ground(row, coll) -> None:
    mesh = bpy.data.meshes.get(GROUND)
    if mesh is None:
        mesh = bpy.data.meshes.new(GROUND)
        s = 500.0
        mesh.from_pydata([(-s, -s, 0), (s, -s, 0), (s, s, 0), (-s, s, 0)], [], [(0, 1, 2, 3)])
        mat = bpy.data.materials.get(GROUND) or bpy.data.materials.new(GROUND)
        mat.use_nodes = True
        mat.node_tree.nodes.get("Principled BSDF").inputs["Roughness"].default_value = 0.85
        mat.pass_index = MASK_PARTS.index("ground")
        mesh.materials.append(mat)
    # With a solid-colour background the ground is a seamless backdrop of that colour (as in a
    # photo studio): otherwise the colour would show only as a strip above the horizon and the
    # background factor would barely change the image.
    color = GROUND_COLOR
    if row["background.kind"] == "color":
        color = (_f(row, "background.color_r"), _f(row, "background.color_g"), _f(row, "background.color_b"))
    mat = mesh.materials[0]
    mat.node_tree.nodes.get("Principled BSDF").inputs["Base Color"].default_value = (*color, 1.0)
    mat.diffuse_color = (*color, 1.0)
    obj = _object(GROUND, mesh, coll)
    obj.matrix_world = Matrix.Identity(4)
    on = bool(row["background.ground"]) and str(row["background.ground"]).lower() not in ("false", "0")
    obj.hide_render = obj.hide_viewport = not on
    # Over a visible environment the ground only catches shadows (Cycles); else plain grey.
    obj.is_shadow_catcher = row["background.kind"] in ("hdri", "image", "transparent")
    obj.pass_index = MASK_PARTS.index("ground")


# --- camera -------------------------------------------------------------------------------------

def _apply_camera(row, scene, coll) -> None:
    data = bpy.data.cameras.get(CAMERA) or bpy.data.cameras.new(CAMERA)
    obj = _object(CAMERA, data, coll)
    m = json.loads(row["camera.matrix_world"]) if isinstance(row["camera.matrix_world"], str) \
        else list(row["camera.matrix_world"])
    obj.matrix_world = Matrix([m[0:4], m[4:8], m[8:12], m[12:16]])
    data.type = "PERSP"
    data.lens = _f(row, "camera.focal_length")
    data.sensor_width = 36.0
    data.sensor_fit = "AUTO"  # matches core.camera.intrinsics
    data.shift_x = data.shift_y = 0.0
    data.clip_start = 0.05
    data.clip_end = 2000.0
    scene.camera = obj


# --- render settings ----------------------------------------------------------------------------

def _setting(spec, path: str):
    return spec.setting(path) if hasattr(spec, "setting") else spec[path]


def _apply_render(row, spec, scene) -> None:
    r = scene.render
    engine = _setting(spec, "render.engine")
    r.engine = ENGINE_IDS[engine]
    r.resolution_x = int(_setting(spec, "render.width"))
    r.resolution_y = int(_setting(spec, "render.height"))
    r.resolution_percentage = 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.use_border = False
    fmt = _setting(spec, "render.format")
    s = r.image_settings
    s.file_format = "PNG" if fmt == "png" else "JPEG"
    s.color_mode = "RGBA" if (r.film_transparent and fmt == "png") else "RGB"
    s.color_depth = "8"
    if fmt == "png":
        s.compression = 15  # fast; PNG is lossless at any level
    else:
        s.quality = 95
    scene.view_settings.view_transform = "Standard"  # colours render as specified, not tone-mapped
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    samples = int(_setting(spec, "render.samples"))
    c = scene.cycles
    c.device = "CPU"
    c.samples = samples
    c.use_adaptive_sampling = False  # fixed work per pixel: reproducible timing and noise
    c.use_denoising = bool(_setting(spec, "render.denoise"))
    c.seed = int(row["seed"]) & 0x7FFFFFFF
    c.use_animated_seed = False
    c.max_bounces = 6
    c.diffuse_bounces = 2
    c.glossy_bounces = 3
    c.transmission_bounces = 4
    c.transparent_max_bounces = 8
    c.caustics_reflective = c.caustics_refractive = False
    c.sample_clamp_direct = 0.0
    c.sample_clamp_indirect = 10.0  # no fireflies from the HDRI sun at low sample counts
    c.pixel_filter_type = "BLACKMAN_HARRIS"
    c.filter_width = 1.5
    if engine == "eevee":
        scene.eevee.taa_render_samples = samples
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "MATERIAL"
    scene.display.render_aa = "8"
    scene.frame_current = 1
