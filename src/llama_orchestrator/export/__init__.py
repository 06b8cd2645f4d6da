"""``llama-orch export kubernetes``: the instance configs as Kubernetes manifests (issue 13).

The documents are plain dicts built from the validated configs (``kubernetes``,
``gateway``), the container's argv from the engine's own builder (``container``), and
written as block YAML by a small emitter of our own (``yamltext``), so exporting needs
no YAML library at run time.
"""
