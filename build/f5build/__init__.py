"""f5build: the ahead-of-time build of F5-TTS + Vocos.

Stages, one module each, run in this order by `nox -s pipeline`:
load -> export -> calibrate -> quantize -> compile -> validate -> cost (and bench, on demand).
"""

__version__ = "0.1.0"
