"""Decoding the sampled frames of a clip: PyAV, the named-binary pipe, raw ``.yuv``, colour
conversion (SDR and HDR), sampling."""
