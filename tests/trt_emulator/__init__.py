"""The TensorRT / CUDA emulation (tests/emulation) runs real API calls and refuses what the real APIs refuse.

Every rule the emulator enforces has a test here that breaks it and sees the refusal: the return
value or status the real API gives (False/None from TensorRT, a cudaError_t from the runtime, a
ContractViolation from the synchronizing call for faults in queued work) and the recorded rule id.
The positive tests pin the semantics the backend relies on: engines built and executed through
ONNX Runtime, work that runs only when synchronized, and graph replays with baked addresses.
"""

import pytest

pytest.register_assert_rewrite("trt_emulator.emukit")  # its checks (ok, Rig, build) report like the tests' own
