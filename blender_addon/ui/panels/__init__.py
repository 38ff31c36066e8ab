"""Sidebar panels (3D Viewport, tab "carprobe"); each class is listed in ui.registration.CLASSES."""
