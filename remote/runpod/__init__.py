"""RunPod: pods (start, stop, state, $/h), the idle stop, and the Serverless
endpoint client with its batch runner. Uses the bridge and core, never jobs."""
