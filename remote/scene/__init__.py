"""A scene as the files it needs: traced with Blender's asset tracer, laid
out as one job tree, each file named by its content (:mod:`.pack`), and the
.blend sent as a delta against a version the pod already holds (:mod:`.delta`).
Uses core only; the bridge moves what this describes.
"""
