"""Deployment runtimes, each in its module and not re-exported here: the modules need the
optional ``[onnx]`` or ``[openvino]`` extra, and ``_host_cpu`` must import without them.
See docs/deployment.md and docs/int8.md."""
