"""The job contract and everything both ends agree on: the job and batch
spec, framing, the .blend header, the cost model, the estimate, pod-output
validation, hosts config, redaction, locking.

The bottom layer: standard library and PyYAML only (zstandard optional, for
compressed .blend headers), so it ships to the pod and runs inside Blender.
"""
