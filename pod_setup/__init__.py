"""What runs on the pod: set-up, the job agent, the render job and its AI backends.

Shipped to ``$WORKSPACE/posefactory/pod_setup`` beside ``remote/``; the
render job puts their common parent on ``sys.path`` so both import as packages.
"""
