"""Triton Inference Server support: the Python-backend models, their repository, a local server.

    f5rt.triton.model       SynthesisModel (`f5tts`) and StreamingModel (`f5tts_stream`, decoupled)
    f5rt.triton.requests    input tensors -> a checked job, through the serving core's checks (f5rt.service)
    f5rt.triton.params      the config.pbtxt parameters a model instance reads
    f5rt.triton.repository  writes <artifacts>/triton/ (KIND_GPU + TensorRT or KIND_CPU + ONNX Runtime)
    f5rt.triton.local       runs the `tritonserver` of the nvidia-pytriton wheel on a repository

`python -m f5rt.triton repository --artifacts artifacts/tiny` rewrites a repository (e.g. on a Jetson
after its engines are built); `python -m f5rt.triton serve --model-repository DIR` serves one with the
wheel's server. Nothing here imports Triton at module level: `triton_python_backend_utils` exists
only inside the server's stub process.
"""
