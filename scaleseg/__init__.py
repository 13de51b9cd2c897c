"""scaleseg: cluster-scale, quality-controlled segmentation of ambiguous bioimages.

The deepflash2 method (Griebel et al., Nat. Commun. 2023) -- multi-expert ground truth, deep
ensembles, ensemble inference with uncertainty, instance separation and quality assurance --
run as a Dask-distributed batch processor over chunked OME-Zarr archives.

``import scaleseg`` is light: torch, cellpose and distributed are imported where they are used.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("scaleseg")
except _metadata.PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
