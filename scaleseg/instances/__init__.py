"""Instance segmentation: methods (components, watershed, cellpose flows, pretrained cellpose),
block stitching with 64-bit provisional ids, instance tables and ImageJ / Fiji ROI sets."""

from ._methods import (
    METHODS,
    CellposeModelMissing,
    cellpose_instances,
    components_instances,
    flows_instances,
    resolve_cellpose_model,
    watershed_instances,
)
from ._rois import export_rois, import_rois, sanitize_roi_name
from ._run import instances_unit, method_params, relabel_unit, run_instances
from ._stitch import (
    block_lookup,
    face_strips,
    match_faces,
    match_neighbours,
    merge_pairs,
    provisional_ids,
    relabel,
    stitch_blocks,
)
from ._tables import INSTANCE_COLUMNS, combine_instance_partials, instance_partials, instance_table

__all__ = [
    "INSTANCE_COLUMNS",
    "METHODS",
    "CellposeModelMissing",
    "block_lookup",
    "cellpose_instances",
    "combine_instance_partials",
    "components_instances",
    "export_rois",
    "face_strips",
    "flows_instances",
    "import_rois",
    "instance_partials",
    "instance_table",
    "instances_unit",
    "match_faces",
    "match_neighbours",
    "merge_pairs",
    "method_params",
    "provisional_ids",
    "relabel",
    "relabel_unit",
    "resolve_cellpose_model",
    "run_instances",
    "sanitize_roi_name",
    "stitch_blocks",
    "watershed_instances",
]
