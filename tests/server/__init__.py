"""The HTTP service f5rt.server (`f5rt serve`) on the tiny model: every endpoint, streaming, batching,
cancellation, voices, health and metrics, configuration, hostile and malformed requests, API keys.

The reference for every audio check is the Synthesizer itself, called directly with the same text,
voice and options: the server may schedule, batch, chunk and encode, but must not change the audio
(beyond 16-bit quantisation). Requests use a 1 s voice and few NFE steps so a request costs ~0.1 s.
"""

import pytest

pytest.register_assert_rewrite("server.serverkit")  # its asserting helpers report like the tests' own
