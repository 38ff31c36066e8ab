"""Render one sample to files, and a whole spec to a render set.

Masks: Cycles' material-index pass (every carprobe material's `pass_index` is its part id in
schema.MASK_PARTS; the world gives 0 = background) is routed by the compositor to a File
Output node writing a one-channel, uncompressed float EXR into a scratch folder (inside the
render set, so a killed process leaks nothing elsewhere; the Viewer image is not updated in
background renders), parsed directly after the render (core.mask_exr: no Blender image
data-block) and written as an 8-bit greyscale PNG whose pixel values are part ids. Cycles
writes index passes from the first camera hit of a pixel's samples, unfiltered, so every pixel
holds exactly one id (no anti-aliased blends) and costs nothing extra in the same render.
Glass is opaque in carprobe's materials, so windows get the glass id. For EEVEE and Workbench,
which have no index pass, the mask comes from a second Cycles render at 1 sample (the engine is
switched before the pass is wired: the render-layer node lists only the current engine's passes).

Images lose Blender's metadata stamp (PNG text chunks, JPEG comments: date, render time,
statistics): identical pixels give identical files.

Determinism: the Cycles seed is the row's per-image seed and adaptive sampling is off, so the
same spec renders the same images; on CPU with several threads Cycles is bit-exact in practice
(tests/blender checks two renders of one row differ by at most 1/255 per channel).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Callable

import bpy

from ..core.errors import CarprobeError
from ..core.mask_box import rows_bbox
from . import scene as scene_mod

MASK_STEM = "carprobe_mask"
_MASK_TAG = "carprobe_mask"


def write_png_gray8(path: str | os.PathLike, width: int, height: int, rows_top_down: list[bytes]) -> None:
    """Write an 8-bit greyscale PNG (stdlib only: no PIL inside Blender)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + r for r in rows_top_down)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    with open(path, "wb") as fh:
        fh.write(png)


def _set_mask_compositor(scene, out_dir: str | None) -> None:
    """Route the material-index pass to an EXR File Output node writing into `out_dir`
    (None: remove carprobe's nodes and the pass)."""
    view_layer = scene.view_layers[0]
    tree = scene.node_tree
    if out_dir is None:
        view_layer.use_pass_material_index = False
        if tree is not None:
            for n in [n for n in tree.nodes if n.get(_MASK_TAG)]:
                tree.nodes.remove(n)
        return
    base_path = out_dir.rstrip("/\\") + os.sep  # a folder: Blender appends the slot path as is
    if _mask_compositor_ready(scene, view_layer, base_path):
        return  # every image of a set: rewiring the tree each time cost about 0.4 ms per image
    view_layer.use_pass_material_index = True
    scene.use_nodes = True
    scene.render.use_compositing = True
    tree = scene.node_tree
    rl = next((n for n in tree.nodes if n.type == "R_LAYERS"), None)
    if rl is None:
        rl = tree.nodes.new("CompositorNodeRLayers")
        rl[_MASK_TAG] = True
    rl.layer = view_layer.name
    comp = next((n for n in tree.nodes if n.type == "COMPOSITE"), None)
    if comp is None:
        comp = tree.nodes.new("CompositorNodeComposite")
        comp[_MASK_TAG] = True
    if not comp.inputs["Image"].is_linked:
        tree.links.new(rl.outputs["Image"], comp.inputs["Image"])
    out = next((n for n in tree.nodes if n.get(_MASK_TAG) and n.type == "OUTPUT_FILE"), None)
    if out is None:
        out = tree.nodes.new("CompositorNodeOutputFile")
        out[_MASK_TAG] = True
        # One float channel, uncompressed: ids survive exactly, with no colour management on
        # the way, and core.mask_exr reads the file without Blender.
        out.format.file_format = "OPEN_EXR"
        out.format.color_mode = "BW"
        out.format.color_depth = "32"
        out.format.exr_codec = "NONE"
        out.file_slots[0].path = MASK_STEM
    out.base_path = base_path
    out.mute = False
    tree.links.new(rl.outputs["IndexMA"], out.inputs[0])


def _mask_compositor_ready(scene, view_layer, base_path: str) -> bool:
    """True when the tree already routes this view layer's index pass to carprobe's File Output
    node writing into `base_path`, with compositing on (what _set_mask_compositor would set)."""
    tree = scene.node_tree
    if tree is None or not (scene.use_nodes and scene.render.use_compositing and view_layer.use_pass_material_index):
        return False
    out = next((n for n in tree.nodes if n.get(_MASK_TAG) and n.type == "OUTPUT_FILE"), None)
    if out is None or out.mute or out.base_path != base_path or not out.inputs[0].is_linked:
        return False
    link = out.inputs[0].links[0]
    source = link.from_node
    if source.type != "R_LAYERS" or source.layer != view_layer.name or link.from_socket.name != "IndexMA":
        return False
    return any(n.type == "COMPOSITE" and n.inputs["Image"].is_linked for n in tree.nodes)


def _read_mask(out_dir: str, width: int, height: int) -> list[bytes]:
    """Part ids from the EXR the File Output node wrote, top row first (the file is removed)."""
    from ..core.mask_exr import read_id_exr

    files = sorted(Path(out_dir).glob(MASK_STEM + "*"))  # no extension when use_file_extension is off
    if not files:
        raise CarprobeError(f"render: the mask pass wrote no file into {out_dir}")
    try:
        return read_id_exr(files[-1], width, height)
    finally:
        for f in files:
            f.unlink(missing_ok=True)


@contextlib.contextmanager
def _only_carprobe_objects(scene):
    """Hide every object outside the `carprobe` collection from the render, restoring it after.

    A dataset image shows exactly what its row says: the startup file's default cube and point
    light (every headless render starts from it) or the user's own objects in the GUI must not
    appear in it or light it. They stay in the file, as they were.
    """
    coll = bpy.data.collections.get(scene_mod.COLLECTION)
    ours = set(coll.all_objects) if coll is not None else set()
    hidden = [obj for obj in scene.objects if obj not in ours and not obj.hide_render]
    for obj in hidden:
        obj.hide_render = True
    try:
        yield
    finally:
        for obj in hidden:
            obj.hide_render = False


def make_image_renderer(spec, threads: int | None = None,
                        scratch_root: str | os.PathLike | None = None) -> Callable[[dict, str, str | None], dict]:
    """render_image(row, image_path, mask_path_or_None): apply the row, render, write files;
    returns {"bbox": the car's box in the mask (core.mask_box), None without a mask or a car pixel}.

    threads: a fixed number of render threads (one of several worker processes); None leaves
    the scene's setting (AUTO: every core, unless the user chose otherwise).
    scratch_root: the render set whose scratch space holds the mask pass (created at the first
    mask, after the loop has claimed the folder); None: a system temp folder (preview).
    """
    mask_dirs: list[str] = []

    def mask_dir() -> str:
        if not mask_dirs or not os.path.isdir(mask_dirs[0]):
            from ..core import render_set
            if scratch_root is not None:
                path = str(render_set.scratch_dir(Path(scratch_root)))
            else:
                path = tempfile.mkdtemp(prefix="carprobe-mask-")
                atexit.register(shutil.rmtree, path, True)
            mask_dirs[:] = [path]
        return mask_dirs[0]

    def render_image(row: dict, image_path, mask_path=None) -> dict:
        scene = bpy.context.scene
        scene_mod.apply_row(row, spec, scene)
        r = scene.render
        if threads is not None:
            r.threads_mode = "FIXED"
            r.threads = threads
        w, h = r.resolution_x, r.resolution_y
        want_mask = mask_path is not None
        r.filepath = str(image_path)
        r.use_file_extension = False  # the loop hands us exact (temporary) file names
        with _only_carprobe_objects(scene):
            if want_mask and r.engine != "CYCLES":  # EEVEE/Workbench have no index pass
                folder = mask_dir()
                engine, samples = r.engine, scene.cycles.samples
                r.engine, scene.cycles.samples = "CYCLES", 1
                try:
                    _set_mask_compositor(scene, folder)
                    r.use_compositing = True
                    bpy.ops.render.render(write_still=False)
                finally:
                    r.engine, scene.cycles.samples = engine, samples
                    _set_mask_compositor(scene, None)
                    r.use_compositing = False
                mask_rows = _read_mask(folder, w, h)
                bpy.ops.render.render(write_still=True)
            else:
                folder = mask_dir() if want_mask else None
                _set_mask_compositor(scene, folder)
                r.use_compositing = want_mask
                bpy.ops.render.render(write_still=True)
                mask_rows = _read_mask(folder, w, h) if want_mask else None
        if not Path(image_path).is_file():
            raise CarprobeError(f"render: Blender wrote no image to {image_path}")
        if mask_rows is None:
            return {"bbox": None}
        write_png_gray8(mask_path, w, h, mask_rows)
        return {"bbox": rows_bbox(mask_rows)}
    return render_image


def render_spec(spec, out_dir, indices=None, progress=True, threads: int | None = None, **kwargs):
    """Render `spec` (all samples, or `indices`) into the render set `out_dir`.

    The glue the CLI and API call: core.render_set.render_samples with this renderer (the GUI
    steps the same core.render_set.RenderLoop with make_image_renderer between events).
    threads: fixed render threads (see make_image_renderer). Extra keyword arguments (shard,
    finalize, progress_stream …) pass through.
    """
    from ..core import render_set
    kwargs.setdefault("blender_version", bpy.app.version_string)
    return render_set.render_samples(spec, out_dir, make_image_renderer(spec, threads, scratch_root=out_dir),
                                     indices=indices, progress=progress, **kwargs)
