"""Stability AI's HTTP APIs: v1 image-to-image (``v1``) and v2beta structure
control (``v2beta``). Used on the pod by the backends; sits on core only."""
