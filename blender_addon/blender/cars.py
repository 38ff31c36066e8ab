"""Build the mesh of a procedural car (core.cars.CarShape) with the plain mesh API (no bpy.ops).

The car is one mesh with seven material slots; the body is a loft of rounded cross-sections
along the car (lower body with wheel-arch cut-outs, then the glass house), wheels are lathed
tyres with spoked rims, lamps, grille, bumpers and mirrors are boxes. Parts are told apart by
material: every carprobe material has `pass_index` = its mask part id (schema.MASK_PARTS), which
the renderer reads back from Cycles' material-index pass. Materials are shared by every car
(one data block each) so changing the identity only swaps the mesh.
"""

from __future__ import annotations

import math

import bpy
import bmesh

from ..core import cars as core_cars
from ..core.schema import MASK_PARTS

# slot name -> (mask part, base colour, metallic, roughness, emission strength)
MATERIALS: dict[str, tuple[str, tuple[float, float, float], float, float, float]] = {
    "Paint": ("body", (0.6, 0.05, 0.05), 0.5, 0.3, 0.0),
    "Glass": ("glass", (0.01, 0.012, 0.015), 0.0, 0.04, 0.0),
    "Tyre": ("wheels", (0.018, 0.018, 0.018), 0.0, 0.75, 0.0),
    "Rim": ("wheels", (0.62, 0.63, 0.65), 1.0, 0.25, 0.0),
    "Lights": ("lights", (0.9, 0.9, 0.85), 0.0, 0.1, 0.6),
    "TailLights": ("lights", (0.6, 0.01, 0.01), 0.0, 0.15, 0.4),
    "Trim": ("trim", (0.025, 0.025, 0.027), 0.0, 0.5, 0.0),
}
SLOTS = tuple(MATERIALS)
PREFIX = "carprobe."


def part_id(part: str) -> int:
    return MASK_PARTS.index(part)


def material_name(slot: str) -> str:
    return PREFIX + slot


def ensure_material(slot: str) -> bpy.types.Material:
    """The shared carprobe material of a slot, created on first use (Principled BSDF)."""
    name = material_name(slot)
    mat = bpy.data.materials.get(name)
    part, color, metallic, rough, emit = MATERIALS[slot]
    if mat is None:
        mat = bpy.data.materials.new(name)
        mat.use_nodes = True
    mat.pass_index = part_id(part)
    bsdf = mat.node_tree.nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    bsdf.inputs["Metallic"].default_value = metallic
    bsdf.inputs["Roughness"].default_value = rough
    if slot == "Glass":
        bsdf.inputs["Specular IOR Level"].default_value = 1.0  # dark tinted glass: all reflection
    if slot == "Paint":
        bsdf.inputs["Coat Weight"].default_value = 0.5
        bsdf.inputs["Coat Roughness"].default_value = 0.03
    if emit > 0:
        bsdf.inputs["Emission Color"].default_value = (*color, 1.0)
        bsdf.inputs["Emission Strength"].default_value = emit
    mat.diffuse_color = (*color, 1.0)  # Workbench / viewport solid colour
    return mat


class _MeshData:
    def __init__(self) -> None:
        self.verts: list[tuple[float, float, float]] = []
        self.faces: list[tuple[int, ...]] = []
        self.mats: list[int] = []

    def v(self, co) -> int:
        self.verts.append(tuple(co))
        return len(self.verts) - 1

    def f(self, idx, slot: str) -> None:
        self.faces.append(tuple(idx))
        self.mats.append(SLOTS.index(slot))

    def loft(self, rings: list[list[tuple]], band_slots, cap_slots=("Paint", "Paint")) -> None:
        """Faces between consecutive closed rings (same vertex count); caps at both ends.

        band_slots(k, j): slot of the face between ring k and k+1, ring edge j.
        """
        ids = [[self.v(p) for p in ring] for ring in rings]
        n = len(rings[0])
        for k in range(len(rings) - 1):
            a, b = ids[k], ids[k + 1]
            for j in range(n):
                j2 = (j + 1) % n
                self.f((a[j], a[j2], b[j2], b[j]), band_slots(k, j))
        self.f(tuple(reversed(ids[0])), cap_slots[0])
        self.f(tuple(ids[-1]), cap_slots[1])

    def box(self, x0, x1, y0, y1, z0, z1, slot: str) -> None:
        c = [self.v((x, y, z)) for z in (z0, z1) for y in (y0, y1) for x in (x0, x1)]
        for q in ((0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)):
            self.f([c[i] for i in q], slot)

    def lathe(self, centre, side: float, profile, slots, segs: int = 30) -> None:
        """Revolve (radius, axial offset) points about the x axis through centre.

        Positive offsets point away from the car (side = +1 left wheels, -1 right). The profile is
        closed (last point joins the first); points with radius 0 become single pole vertices.
        slots(j, seg): slot of the face from profile point j to j+1 at segment seg.
        """
        cx, cy, cz = centre
        rings = []
        for r, a in profile:
            if r <= 1e-9:
                rings.append([self.v((cx + side * a, cy, cz))] * segs)
                continue
            # Start at the bottom so a vertex of every ring touches the ground exactly.
            angles = [-math.pi / 2 + 2 * math.pi * i / segs for i in range(segs)]
            rings.append([self.v((cx + side * a, cy + r * math.cos(t), cz + r * math.sin(t))) for t in angles])
        m = len(profile)
        for j in range(m):
            a, b = rings[j], rings[(j + 1) % m]
            for i in range(segs):
                i2 = (i + 1) % segs
                quad = [a[i], a[i2], b[i2], b[i]]
                dedup = [q for k, q in enumerate(quad) if q not in quad[:k]]
                if len(dedup) >= 3:
                    self.f(dedup, slots(j, i))


def _mirror_ring(half: list[tuple[float, float]], y: float) -> list[tuple[float, float, float]]:
    """Closed ring from a right-half section [(x, z)] running from the bottom centre to the top
    centre (both with x = 0), mirrored to the left side."""
    right = [(x, y, z) for x, z in half]
    left = [(-x, y, z) for x, z in reversed(half[1:-1])]
    return right + left


def build_mesh(shape: core_cars.CarShape, name: str) -> bpy.types.Mesh:
    """A new mesh data block of the car, with the carprobe material slots."""
    md = _MeshData()
    L = shape.length
    y = shape.y
    crown = 0.03

    # Lower body: per station a rounded section from the underside to the bonnet/deck line.
    rings = []
    for s, zb, zt, w in core_cars.body_stations(shape):
        h = zt - zb
        half = [(0.0, zb), (w - 0.05, zb), (w, zb + min(0.08, 0.3 * h)), (w, zt - min(0.09, 0.3 * h)),
                (w - 0.045, zt - 0.005), (w * 0.55, zt + crown * 0.75), (0.0, zt + crown)]
        rings.append(_mirror_ring(half, y(s)))
    n_half = 7
    # Ring edges 0 and the mirrored last one are the underside: dark trim (wheel wells read dark).
    under = {0, 2 * (n_half - 1) - 1}
    md.loft(rings, lambda k, j: "Trim" if j in under else "Paint")

    # Glass house: sill, side glass, roof rail, roof; windscreen and rear glass at the ends.
    gh = core_cars.greenhouse_stations(shape)
    rings = []
    for s, sill, rail, w_sill, w_rail, _side in gh:
        rr = min(0.05, (rail - sill) / 3.0)
        top = rail + max(0.0, min(shape.roof_crown, rail - sill - rr))
        half = [(0.0, sill), (w_sill, sill), (w_rail, rail - rr), (w_rail - rr, rail), (0.0, top)]
        rings.append(_mirror_ring(half, y(s)))
    last = len(gh) - 2

    def gh_slot(k: int, j: int) -> str:
        band = j if j < 4 else 7 - j  # mirror: 0 bottom, 1 side, 2 rail, 3 roof
        if band == 1:
            return "Glass" if gh[k][5] == "glass" else "Paint"
        if band == 3:
            return "Glass" if k in (0, last) else "Paint"
        return "Paint"

    md.loft(rings, gh_slot)

    # Wheels: tyre (rounded shoulders) and a dished rim with five spokes.
    R, hw = shape.wheel_radius, shape.wheel_width / 2.0
    rim_r = R * 0.66
    tyre = [(rim_r, -hw * 0.92), (R - 0.05, -hw), (R, -hw * 0.55), (R, hw * 0.55), (R - 0.05, hw),
            (rim_r, hw * 0.92)]
    rim = [(0.0, hw * 0.55), (rim_r * 0.28, hw * 0.6), (rim_r * 0.85, hw * 0.42), (rim_r, hw * 0.9),
           (rim_r, -hw * 0.8), (0.0, -hw * 0.8)]
    segs = 30
    for cx, cy, cz in shape.wheel_centres():
        side = 1.0 if cx > 0 else -1.0
        md.lathe((cx, cy, cz), side, tyre, lambda j, i: "Tyre", segs)
        md.lathe((cx, cy, cz), side, rim,
                 lambda j, i: "Trim" if j == 1 and (i // 3) % 2 else "Rim", segs)

    # Lamps, grille, bumpers: boxes poking out of the nose and tail faces.
    w0 = core_cars.half_width(shape, 0.0)
    nose, bump = shape.nose_height, shape.bumper_height
    tail_top = shape.deck_height - 0.06
    f0, r0 = y(0.0), y(L)
    for sx in (1.0, -1.0):
        xs = sorted((sx * (w0 - 0.38), sx * (w0 - 0.06)))
        md.box(*xs, f0 - 0.012, f0 + 0.12, nose - 0.13, nose - 0.03, "Lights")
        md.box(*xs, r0 - 0.12, r0 + 0.012, tail_top - 0.16, tail_top - 0.03, "TailLights")
        sm = shape.windscreen_base + 0.05
        wm = core_cars.half_width(shape, sm)
        xm = sorted((sx * (wm - 0.12), sx * (wm + 0.11)))
        top = core_cars.body_top(shape, sm)
        md.box(*xm, y(sm), y(sm + 0.14), top - 0.01, top + 0.10, "Paint")  # mirrors
    gw = max(0.15, w0 - 0.45)
    md.box(-gw, gw, f0 - 0.008, f0 + 0.1, bump + 0.15, max(bump + 0.2, nose - 0.07), "Trim")  # grille
    md.box(-(w0 + 0.025), w0 + 0.025, f0 - 0.025, f0 + 0.16, bump - 0.03, bump + 0.11, "Trim")
    md.box(-(w0 + 0.025), w0 + 0.025, r0 - 0.16, r0 + 0.025, bump - 0.03, bump + 0.11, "Trim")
    if shape.bed:  # open load bed: a dark floor just above the deck, inside the bed walls
        bw = shape.width / 2.0 - 0.09
        md.box(-bw, bw, y(shape.rear_glass_base + 0.07), y(L - 0.1), shape.belt_height - 0.3,
               shape.belt_height + crown + 0.004, "Trim")

    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(md.verts, [], md.faces)
    mesh.polygons.foreach_set("material_index", md.mats)
    bm = bmesh.new()
    bm.from_mesh(mesh)
    bmesh.ops.remove_doubles(bm, verts=bm.verts, dist=1e-5)  # lathe poles, duplicate stations
    bmesh.ops.recalc_face_normals(bm, faces=bm.faces)
    bm.to_mesh(mesh)
    bm.free()
    for slot in SLOTS:
        mesh.materials.append(ensure_material(slot))
    mesh.shade_smooth()
    mesh.set_sharp_from_angle(angle=math.radians(38.0))
    mesh.update()
    return mesh
