"""The SSH bridge: one persistent shell per host over a transport (a PTY or
pipes, one module each), files by content (``transfer/``), the JSONL queue
and its agent, and the Python API (:class:`remote.bridge.api.Bridge`).

Inside, imports point down: ``agent`` → ``api`` → ``transfer`` → ``shell``
→ transports; all of it sits on :mod:`remote.core` only.
"""
