"""Deployment runtimes. What users reach, each in its module (nothing is re-exported here:
the modules need the optional ``[onnx]`` or ``[openvino]`` extra, imported through
:func:`mmrepvgg._utils.require`, and ``host_cpu`` must import without them):

- :func:`.onnx_export.export_onnx`: the deploy form as a verified FP32 ONNX file;
- :func:`.quantization.export_int8` with an :class:`.quantization.Int8Recipe`: static INT8
  for ONNX Runtime;
- :func:`.openvino_runtime.export_openvino`: an OpenVINO IR, FP32 or INT8;
- :class:`.onnx_runtime.OnnxRuntimeModel` and :class:`.openvino_runtime.OpenVINOModel`: the
  one adapter per runtime (images in, logits out), used by the tools, the APIs and the
  benchmark alike.

Layer order: ``reparam`` -> ``models`` -> ``checkpoint`` -> ``engine`` -> ``deploy`` ->
``apis``; nothing here imports ``apis``.
"""
