"""Fault-injection suite of the build (issue 24): killed stages, full disks, bad inputs, two builds at once,
tampered artifacts. See docs/build-faults.md."""
