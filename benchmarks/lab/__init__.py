"""The lab's library: what the instruments in ``benchmarks/`` share. It imports
:mod:`mmrepvgg` and is never imported by it, nor shipped in its wheel.

- :mod:`.emulated_cpu`: the CPU as a process under ``as_avx2_only.py`` sees it
  (:mod:`.avx2_only_library`: that tool's library in a process's memory map);
- :mod:`.benchmark`: the comparisons of ``benchmark.py`` (needs the ``onnx`` extra);
- :mod:`.rows`: the names of its rows; :mod:`.report`: its Markdown tables (plain data,
  no torch); :mod:`.plotting`: the PNGs of ``docs/benchmarks.md`` (the ``plot`` extra);
- :mod:`.kernel_emulation`: a Python model of ONNX Runtime's x86 integer conv kernels.
- :mod:`.adaround`: learned rounding of the weights to the INT8 grid (``int8_accuracy.py``'s
  AdaRound rows), and the fake-quantized conv the QAT and kernel emulation share;
- :mod:`.qat`: quantization-aware fine-tuning of the deploy form (``int8_accuracy.py``'s
  QAT rows).
- :mod:`.synthetic`: trained-looking random BN statistics (for tests, too);
- :mod:`.threads`: the torch thread count of a measured block, given back (tests, too);
- :mod:`.photos`: the photos data set of the INT8 recipes (the ``photos`` extra);
- :mod:`.peak_memory`: the peak resident memory of a block (``bad_input_memory.py``).
"""
