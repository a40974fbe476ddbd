"""One job's lifecycle on the laptop: its state and record, the executors
that run it (a pod over the bridge, or RunPod Serverless), batch items and
their reuse, the ledger, and the one ``settle`` every end goes through.

Used by the apps on top (CLI, dashboard) and by the Blender add-on.
"""
