"""OME-Zarr input and output: lazy reading, collections, chunk-aligned writing, conversion.

Local paths always work; ``s3://`` and other fsspec URLs work when the matching fsspec backend
is installed. Inputs are opened read-only.
"""

from ._convert import EXPERT_PREFIX, ConversionItem, convert_folder, expert_label, plan_conversion
from ._imagefiles import IMAGE_SUFFIXES, ImageFileError, read_image_file, read_mask_file
from ._pyramid import build_pyramid, downsample_image, downsample_labels, level_shapes
from ._read import (
    ImageRef,
    NotOmeZarrError,
    image_info,
    list_labels,
    ome_attrs,
    open_collection,
    open_image,
    open_labels,
    read_multiscales,
    to_cyx,
)
from ._store import is_remote, join_url, list_child_groups, location_exists, open_group, safe_name
from ._write import (
    create_labels,
    create_multiscale,
    ngff_format,
    remove_location,
    write_image,
    write_labels,
)

__all__ = [
    "EXPERT_PREFIX",
    "IMAGE_SUFFIXES",
    "ConversionItem",
    "ImageFileError",
    "ImageRef",
    "NotOmeZarrError",
    "build_pyramid",
    "convert_folder",
    "create_labels",
    "create_multiscale",
    "downsample_image",
    "downsample_labels",
    "expert_label",
    "image_info",
    "is_remote",
    "join_url",
    "level_shapes",
    "list_child_groups",
    "list_labels",
    "location_exists",
    "ngff_format",
    "ome_attrs",
    "open_collection",
    "open_group",
    "open_image",
    "open_labels",
    "plan_conversion",
    "read_image_file",
    "read_mask_file",
    "read_multiscales",
    "remove_location",
    "safe_name",
    "to_cyx",
    "write_image",
    "write_labels",
]
