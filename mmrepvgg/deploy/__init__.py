"""Deployment runtimes: ONNX export, the ONNX Runtime session, INT8 quantization and the
evaluation of an exported model on a config's test set.

Layer order: ``reparam`` -> ``models`` -> ``checkpoint`` -> ``engine`` -> ``deploy`` ->
``apis`` -> ``analysis``; nothing here imports ``apis`` or ``analysis``. The optional
runtimes (onnx, onnxruntime) are imported through :func:`mmrepvgg.utils.require`.
"""
