"""The extension's GUI: property groups, operators and 3D-Viewport sidebar panels (tab "carprobe").

``registration`` imports bpy and lists every class; ``fields`` (the property layout and the
spec <-> properties conversion) and ``render_job`` are bpy-free and tested without Blender.
"""
