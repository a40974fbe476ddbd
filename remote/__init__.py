"""Pose Factory's remote side: the SSH bridge, transfers, the job contract,
the Stability client and the cost model.

Never imports bpy: this package runs on a laptop, inside Blender (bundled in
the extension) and on the pod alike. Modules import each other relatively so
the package works both as top-level ``remote`` and bundled inside the add-on.
"""
