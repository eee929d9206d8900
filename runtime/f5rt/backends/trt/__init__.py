"""The TensorRT backend, one concept per module (after Polygraphy's backend/trt layout).

Planning, pure (no TensorRT, no CUDA import; shared with `f5build.compile` and tested on the CPU):

* `contract`: the three graphs' I/O tensors and their axis roles;
* `profiles`: one optimization profile per shape bucket;
* `engines`: deployments (a precision per graph), manifest and engine checks;
* `arena`: device memory layout and the per-step tensor addresses of the NFE loop.

Execution (imports cuda-python / TensorRT lazily, when first used):

* `cuda`: a thin checked wrapper of the CUDA runtime API (streams, buffers, events, graphs);
* `runner`: one bucket's device state and its NFE loop, captured once into a CUDA graph;
* `backend`: `TensorRTBackend`, the Backend protocol on TensorRT engines.
"""
