"""saliency-assets: per-clip saliency features for video-quality feature tables."""

__version__ = "0.1.0"
