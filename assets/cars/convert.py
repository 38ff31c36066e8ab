"""Make the shipped car models (assets/cars/*.glb, cars.toml, ATTRIBUTION.md) from Debian's
`sweethome3d-furniture` package. Run by hand with the bpy venv, never at install time:

    cd /tmp && apt-get download sweethome3d-furniture
    dpkg-deb -x sweethome3d-furniture_*_all.deb sh3d
    /work/main/.venv/bin/python assets/cars/convert.py /tmp/sh3d/usr/share/sweethome3d/furniture

The package's .sh3f files are zips of OBJ + MTL (+ textures). For each model in MODELS this
script, in a fresh Blender scene:
1. imports the OBJ (Blender's default axes: OBJ +Y up, -Z forward) and joins it into one mesh;
2. scales it to the real length the catalogue gives (`depth`, cm) and puts it on the origin;
3. renames every material to `<part>:<original name>` (`Paint` for the paint), where part is
   what carprobe's mask reads from the name (glass, wheels, lights, lights:front, lights:rear,
   trim, body): MODELS' explicit `parts` first, then the word rules in `classify`;
4. deletes brand-logo faces (materials named brand/marca), where a model has them, and paints
   over the badges drawn in four texture atlases (LOGO_PATCHES);
5. decimates meshes above MAX_TRIANGLES (collapse), clears custom normals, smooths by angle;
6. works out the yaw that turns the front (front-light centroid) to -y, the carprobe
   convention, and records it in cars.toml (the mesh itself keeps the package's orientation);
7. exports a .glb (textures kept as in the package, so small decals stay; glass stays as the
   MTL says — carprobe makes it opaque when it loads the model).
cars.toml, ATTRIBUTION.md and the credit block of assets/README.md are rewritten from MODELS
(tests/core check that they agree and name every shipped file).
"""

from __future__ import annotations

import argparse
import math
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_TRIANGLES = 30000

LICENCES = {
    "CC-BY-3.0": ("Creative Commons Attribution 3.0 Unported", "https://creativecommons.org/licenses/by/3.0/"),
    "CC-BY-3.0-US": ("Creative Commons Attribution 3.0 United States",
                     "https://creativecommons.org/licenses/by/3.0/us/"),
}
FORD = ("Ford Focus by Ruff (Blend Swap 76275, http://www.blendswap.com/blends/view/76275), "
        "simplified by Emmanuel Puybaret / eTeks")
KATOR = "(C) Copyright Andrew Kator & Jennifer Legaz"
ETEKS = ("(C) Copyrights 2014-2020 Emmanuel PUYBARET / eTeks <info@eteks.com> and Scopia Visual "
         "Interfaces Systems, s.l. (http://www.scopia.es)")
SCOPIA = "(C) Copyrights 2006-2020 Scopia Visual Interfaces Systems, s.l. (http://www.scopia.es)"

# id -> source: (sh3f, path in the zip, length in m from the catalogue, credit, licence, style,
# explicit material parts). Ids are neutral (no brand names); `style` is what a reader sees.
MODELS: dict[str, dict] = {
    "hatch_a": dict(sh3f="BlendSwap-CC-BY.sh3f", obj="blendswap-cc-by/fordFocus/fordFocus.obj", length=4.358,
                    credit=FORD, licence="CC-BY-3.0", style="five-door hatchback",
                    parts={"carPaint": "Paint", "glass_red": "lights_rear", "white": "lights",
                           "yellow_chrome": "lights_front", "blue_gradient": "lights"}),
    "hatch_b": dict(title="Seat Leon", sh3f="Scopia.sh3f", obj="scopia/seat_leon/seat_leon.obj", length=4.195, credit=SCOPIA,
                    licence="CC-BY-3.0", style="five-door hatchback",
                    parts={"chapa_roja": "Paint", "faros_rojos": "lights_rear", "faros_blan_back": "lights_rear",
                           "faros_blancos_faro1_leon.jpg": "lights_front", "llantas": "wheels",
                           "asientos": "body", "matricula": "trim"}),
    "sedan_a": dict(title="Concept Sedan 01 (concept-sedan-01v1)", sh3f="KatorLegaz.sh3f", obj="katorlegaz/concept-sedan-01v1/concept-sedan-01v1.obj",
                    length=4.711, credit=KATOR, licence="CC-BY-3.0-US", style="saloon (concept)",
                    parts={"Car": "Paint", "Headlights": "lights_front", "Taillights": "lights_rear",
                           "Turn_signals": "lights", "Reflector": "lights"}),
    "sedan_b": dict(title="Concept Sedan 02", sh3f="KatorLegaz.sh3f", obj="katorlegaz/concept-sedan-02/concept-sedan-02.obj",
                    length=4.398, credit=KATOR, licence="CC-BY-3.0-US", style="saloon (concept)",
                    parts={"PAINT_lt_blue": "Paint"}),
    "sedan_c": dict(title="Concept Sedan 02 Sport", sh3f="KatorLegaz.sh3f", obj="katorlegaz/concept-sedan-02-sport/concept-sedan-02-sport.obj",
                    length=4.249, credit=KATOR, licence="CC-BY-3.0-US", style="sports saloon (concept)",
                    parts={"PAINT_lt_blue": "Paint"}),
    "compact_a": dict(title="VW new beetle", sh3f="KatorLegaz.sh3f", obj="katorlegaz/VW-new-beetle/VW-new-beetle.obj", length=4.091,
                      credit=KATOR, licence="CC-BY-3.0-US", style="rounded three-door compact",
                      parts={"PAINT_yellow": "Paint", "PAINT_black": "trim"}),
    "coupe_a": dict(title="Chevrolet", sh3f="Scopia.sh3f", obj="scopia/chevrolet/chevrolet.obj", length=4.457, credit=ETEKS,
                    licence="CC-BY-3.0", style="sports coupé", parts={"firstcolor": "Paint",
                                                                       "glassfocus": "lights_front"}),
    "cabrio_a": dict(title="Peugeot 308 CC", sh3f="Scopia.sh3f", obj="scopia/peugeot-308/peugeot-308.obj", length=4.44, credit=ETEKS,
                     licence="CC-BY-3.0", style="coupé-cabriolet, roof closed",
                     parts={"color-exterior": "Paint", "front-lights": "lights_front",
                            "rear-lights": "lights_rear", "wheels": "wheels", "esteering_wheel": "body"}),
    "suv_a": dict(title="SUV", sh3f="Scopia.sh3f", obj="scopia/suv/suv.obj", length=4.631, credit=ETEKS, licence="CC-BY-3.0",
                  style="SUV", parts={"firstcolor": "Paint"}),
    "mpv_a": dict(title="Renault Scenic", sh3f="Scopia.sh3f", obj="scopia/renault-scenic/renault-scenic.obj", length=4.262, credit=ETEKS,
                  licence="CC-BY-3.0", style="compact MPV (paint is a texture in the package)",
                  parts={"color-beige-green": "Paint", "front-lights": "lights_front", "back-lights": "lights_rear",
                         "wheels": "wheels"}),
    "city_a": dict(title="Smart car", sh3f="Scopia.sh3f", obj="scopia/smart-car/smart-car.obj", length=2.528, credit=ETEKS,
                   licence="CC-BY-3.0", style="two-seat city car",
                   parts={"first-color": "Paint", "back-lights": "lights_rear", "grey-light": "lights",
                          "second-color": "trim", "dark-roof": "trim", "black-glass": "glass"}),
    "van_a": dict(title="Van", sh3f="Scopia.sh3f", obj="scopia/van/van.obj", length=5.958, credit=ETEKS, licence="CC-BY-3.0",
                  style="panel van", parts={"firstcolor": "Paint", "redlights": "lights_rear",
                                            "whiteglass": "glass"}),
}

README_START = "<!-- car credits (convert.py) -->"
README_END = "<!-- end car credits -->"
# Brand badges painted into texture atlases: (x0, y0, x1, y1) pixel boxes, top-left origin,
# filled with the median colour of a 2-pixel ring around each box.
LOGO_PATCHES: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    "texture-van.png": ((87, 36, 128, 74), (176, 106, 199, 128)),
    "suv-map.png": ((53, 106, 105, 125), (173, 133, 213, 148)),
    "chevrolet-texture-map.png": ((10, 51, 63, 82),),
    "renault-scenic.jpg": ((59, 19, 81, 45),),
}
LOGO_WORDS = ("brand", "marca")
# Word rules for materials MODELS does not name (checked in this order: lights before glass).
# lights:front / lights:rear only for lamps that are surely at one end (they set the yaw);
# turn signals, reflectors … are plain lights.
WORDS = (("trim", ("mirror", "textured")),
         ("lights_rear", ("brake", "tail", "redlight", "rojo")),
         ("lights_front", ("headlight", "front-light")),
         ("lights", ("turn_signal", "parking_light", "lens", "reflector", "light")),
         ("wheels", ("rubber", "tire", "tyre", "tread", "neumatico", "wheel")),
         ("glass", ("glass", "cristal", "window", "defroster")),
         ("trim", ("chrome", "plastic", "black", "metal", "aluminum", "mirror", "vent", "lowparts", "holes",
                   "doorlines", "plate", "matricula", "car-number", "air-inlet", "gray", "textured", "yellow")))


def classify(model_id: str, name: str) -> str:
    explicit = MODELS[model_id]["parts"]
    if name in explicit:
        return explicit[name]
    low = name.lower()
    for part, words in WORDS:
        if any(w in low for w in words):
            return part
    return "body"  # interior, seats … : hidden behind opaque glass; count as body


def extract(furniture: Path, sh3f: str, obj: str, work: Path) -> Path:
    out = work / Path(sh3f).stem
    if not (out / obj).is_file():
        with zipfile.ZipFile(furniture / sh3f) as zf:
            folder = str(Path(obj).parent) + "/"
            zf.extractall(out, [n for n in zf.namelist() if n.startswith(folder)])
    return out / obj


def convert(model_id: str, obj_path: Path, out: Path) -> dict:
    import bpy  # before bmesh/mathutils: the bpy wheel provides them
    import bmesh
    from mathutils import Vector

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.obj_import(filepath=str(obj_path))
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    bpy.ops.object.select_all(action="DESELECT")
    for o in meshes:
        o.select_set(True)
    bpy.context.view_layer.objects.active = meshes[0]
    if len(meshes) > 1:
        bpy.ops.object.join()
    car = bpy.context.view_layer.objects.active
    car.name = car.data.name = model_id  # no source (brand) names left in the file
    bpy.ops.object.transform_apply(location=True, rotation=True, scale=True)
    mesh = car.data

    # Materials: rename to <part>_<name>; drop logo faces.
    logo_slots = set()
    renamed = {}
    for i, slot in enumerate(car.material_slots):
        mat = slot.material
        if mat is None:
            continue
        orig = mat.name
        if any(w in orig.lower() for w in LOGO_WORDS):
            logo_slots.add(i)
            continue
        part = classify(model_id, orig)
        mat.name = "Paint" if part == "Paint" else f"{part.replace('_', ':')}:{orig}"
        renamed[orig] = mat.name
    patched = _paint_over_logos(obj_path.parent / "logo-free")  # beside the extracted package
    bm = bmesh.new()
    bm.from_mesh(mesh)
    logos = [f for f in bm.faces if f.material_index in logo_slots]
    bmesh.ops.delete(bm, geom=logos, context="FACES")
    bm.to_mesh(mesh)
    bm.free()

    # Scale to the catalogue length (along the longer horizontal axis), centre on the ground.
    co = [v.co.copy() for v in mesh.vertices]
    lo = Vector([min(c[k] for c in co) for k in range(3)])
    hi = Vector([max(c[k] for c in co) for k in range(3)])
    size = hi - lo
    scale = MODELS[model_id]["length"] / max(size.x, size.y)
    centre = Vector(((lo.x + hi.x) / 2, (lo.y + hi.y) / 2, lo.z))
    for v in mesh.vertices:
        v.co = (v.co - centre) * scale

    tris_before = sum(len(p.vertices) - 2 for p in mesh.polygons)
    if mesh.has_custom_normals:
        with bpy.context.temp_override(object=car, active_object=car):
            bpy.ops.mesh.customdata_custom_splitnormals_clear()
    if tris_before > MAX_TRIANGLES:
        mod = car.modifiers.new("decimate", "DECIMATE")
        mod.ratio = MAX_TRIANGLES / tris_before
        mod.use_collapse_triangulate = True
        with bpy.context.temp_override(object=car, active_object=car):
            bpy.ops.object.modifier_apply(modifier=mod.name)
    mesh.shade_smooth()
    mesh.set_sharp_from_angle(angle=math.radians(35.0))
    tris_after = sum(len(p.vertices) - 2 for p in mesh.polygons)

    yaw = front_yaw(car)
    glb = out / f"{model_id}.glb"
    bpy.ops.export_scene.gltf(filepath=str(glb), export_format="GLB", use_selection=False, export_apply=True,
                              export_yup=True, export_cameras=False, export_lights=False,
                              export_normals=True, export_texcoords=True, export_materials="EXPORT")
    return dict(triangles_before=tris_before, triangles=tris_after, yaw=yaw, bytes=glb.stat().st_size,
                materials=renamed, logos_removed=len(logos), logos_painted=patched)


def _paint_over_logos(work: Path) -> int:
    """Fill LOGO_PATCHES boxes in the scene's images; save them as new files the export reads."""
    import bpy
    import numpy as np

    count = 0
    for img in bpy.data.images:
        boxes = LOGO_PATCHES.get(Path(img.filepath).name)
        if not boxes:
            continue
        w, h = img.size
        px = np.array(img.pixels[:], dtype=np.float32).reshape(h, w, img.channels)[::-1]  # top row first
        for x0, y0, x1, y1 in boxes:
            ring = np.concatenate([px[y0 - 2:y0, x0:x1].reshape(-1, img.channels),
                                   px[y1:y1 + 2, x0:x1].reshape(-1, img.channels),
                                   px[y0:y1, x0 - 2:x0].reshape(-1, img.channels),
                                   px[y0:y1, x1:x1 + 2].reshape(-1, img.channels)])
            px[y0:y1, x0:x1] = np.median(ring, axis=0)
            count += 1
        work.mkdir(exist_ok=True)
        img.pixels[:] = px[::-1].ravel()
        img.filepath_raw = str(work / Path(img.filepath).name)
        img.file_format = "PNG" if img.filepath_raw.endswith(".png") else "JPEG"
        img.save()
    return count


def front_yaw(car) -> float:
    """Yaw (degrees, multiple of 90) that turns the car so its front lights face -y."""
    from mathutils import Vector

    mesh = car.data
    sums = {"front": [Vector(), 0], "rear": [Vector(), 0]}
    for poly in mesh.polygons:
        mat = car.material_slots[poly.material_index].material
        name = mat.name if mat else ""
        for end in sums:
            if name.startswith(f"lights:{end}:"):
                sums[end][0] += poly.center * poly.area
                sums[end][1] += poly.area
    if not sums["front"][1] or not sums["rear"][1]:
        # No separate front/rear lights: the longer axis is the car's; assume the package's
        # usual orientation (front towards -y after import).
        return 0.0
    d = sums["front"][0] / sums["front"][1] - sums["rear"][0] / sums["rear"][1]
    heading = math.degrees(math.atan2(d.x, -d.y))  # 0 when the front is at -y
    return float(-90.0 * round(heading / 90.0)) % 360.0


def write_manifest(results: dict[str, dict]) -> None:
    lines = ["# Shipped car models (written by assets/cars/convert.py; see ATTRIBUTION.md).",
             "# file: model file in this folder; paint_material: the material the paint factor drives;",
             "# yaw: degrees about z that turn the model to face -y (carprobe's front); length: metres.", ""]
    for model_id, res in results.items():
        m = MODELS[model_id]
        lines += [f"[{model_id}]", f'file = "{model_id}.glb"', 'paint_material = "Paint"',
                  f"yaw = {res['yaw']:g}", f"length = {m['length']:g}", f'style = "{m["style"]}"',
                  f"triangles = {res['triangles']}", ""]
    (HERE / "cars.toml").write_text("\n".join(lines), encoding="utf-8")


def attribution_line(model_id: str) -> str:
    m = MODELS[model_id]
    name, url = LICENCES[m["licence"]]
    title = f"\"{m['title']}\" from the Sweet Home 3D furniture library, " if "title" in m else ""
    return f"- `{model_id}.glb`: {title}{m['credit']}. Licence: {name} ({m['licence']}), {url}."


def write_attribution(results: dict[str, dict]) -> None:
    lines = ["# Car models: attribution", "",
             "Every file here is a derivative of a model in Debian's `sweethome3d-furniture` package "
             "(Sweet Home 3D furniture libraries, version 1.8). Credit line, licence and link per file:", ""]
    lines += [attribution_line(i) for i in results]
    lines += ["", "## Changes made (by `convert.py`, to every file)", "",
              "Converted from OBJ/MTL to glTF binary; scaled to the real length; centred on the ground; "
              "materials renamed to `<part>:<original>` (the paint to `Paint`); brand-logo faces removed where "
              "the model has a logo material and badges in texture atlases painted over; meshes above "
              f"{MAX_TRIANGLES} triangles decimated; normals recomputed (smooth by angle). Per file:", ""]
    for model_id, res in results.items():
        src = MODELS[model_id]
        dec = (f"decimated {res['triangles_before']} → {res['triangles']} triangles"
               if res["triangles"] < res["triangles_before"] else f"{res['triangles']} triangles (not decimated)")
        logo = f", {res['logos_removed']} logo faces removed" if res["logos_removed"] else ""
        if res["logos_painted"]:
            logo += f", {res['logos_painted']} badge(s) painted over in the texture"
        lines.append(f"- `{model_id}.glb` from `{src['sh3f']}:{src['obj']}`: {dec}{logo}.")
    (HERE / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # assets/README.md carries the same credit lines between two markers.
    readme = HERE.parent / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    block = "\n".join(attribution_line(i) for i in results)
    readme.write_text(text[:start] + "\n" + block + "\n" + text[end:], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("furniture", type=Path, help="folder holding the package's .sh3f files")
    ap.add_argument("--work", type=Path, default=Path("/tmp/carprobe-sh3d"), help="extraction folder")
    ap.add_argument("--only", nargs="*", default=None, help="convert only these ids (manifest keeps all)")
    args = ap.parse_args(argv)
    results = {}
    for model_id, m in MODELS.items():
        if args.only and model_id not in args.only:
            continue
        obj = extract(args.furniture, m["sh3f"], m["obj"], args.work)
        res = convert(model_id, obj, HERE)
        results[model_id] = res
        print(f"{model_id}: {res['triangles_before']} -> {res['triangles']} tris, yaw {res['yaw']:g}, "
              f"{res['bytes'] / 1e6:.2f} MB, materials {res['materials']}", flush=True)
    if not args.only:
        write_manifest(results)
        write_attribution(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
