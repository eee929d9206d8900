"""The one-shot check for a machine with an NVIDIA GPU and a CUDA driver but no TensorRT: `python -m gpucheck` from tests/.

It runs the CUDA wrapper's GPU tests and times the runtime's real NFE-loop runner (captured CUDA
graph vs eager launches, 256-byte per-step slots) with an NVRTC CFG + Euler kernel standing in for
the step engine, and writes `reports/gpucheck.json`. Sized to finish in well under 5 minutes.
"""
