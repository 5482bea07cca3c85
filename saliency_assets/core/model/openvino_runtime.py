"""The OpenVINO runtime, imported without the usage telemetry its package sends by default.

``import openvino`` loads its model converter, whose ``openvino_telemetry`` (on unless a user
opted out in a file under their home) forks a process from a background thread to post usage
data to Google Analytics: a network call nobody asked this tool for, and a fork inside the
forkserver or a worker. With that module made unimportable first, the converter uses the stub
it ships for installs without telemetry. Only when openvino is not imported yet: a process that
imported it before us keeps what it chose.
"""

from __future__ import annotations

import sys

if "openvino" not in sys.modules:
    sys.modules.setdefault("openvino_telemetry", None)

import openvino  # noqa: E402

__all__ = ["openvino"]
