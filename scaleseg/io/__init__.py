"""OME-Zarr input and output: lazy reading, collections, chunk-aligned writing, conversion.

Local paths always work; ``s3://`` and other fsspec URLs work when the matching fsspec backend
is installed. Inputs are opened read-only.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "ConversionItem": "._convert",
        "EXPERT_PREFIX": "._convert",
        "IMAGE_SUFFIXES": "._imagefiles",
        "ImageFileError": "._imagefiles",
        "ImageRef": "._read",
        "NotOmeZarrError": "._read",
        "build_pyramid": "._pyramid",
        "convert_folder": "._convert",
        "create_labels": "._write",
        "create_multiscale": "._write",
        "downsample_image": "._pyramid",
        "downsample_labels": "._pyramid",
        "expert_label": "._convert",
        "image_info": "._read",
        "is_remote": "._store",
        "join_url": "._store",
        "level_shapes": "._pyramid",
        "list_child_groups": "._store",
        "list_labels": "._read",
        "location_exists": "._store",
        "ngff_format": "._write",
        "ome_attrs": "._read",
        "open_collection": "._read",
        "open_group": "._store",
        "open_image": "._read",
        "open_labels": "._read",
        "plan_conversion": "._convert",
        "read_image_file": "._imagefiles",
        "read_mask_file": "._imagefiles",
        "read_multiscales": "._read",
        "remove_location": "..files",
        "safe_name": "._store",
        "to_cyx": "._read",
        "write_image": "._write",
        "write_labels": "._write",
    },
)
