"""The saliency model: sessions and providers, preprocessing, tiling, temporal reducers, and one
clip's computation."""
