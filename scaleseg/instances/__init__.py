"""Instance segmentation: methods (components, watershed, cellpose flows, pretrained cellpose),
block stitching with 64-bit provisional ids, instance tables and ImageJ / Fiji ROI sets."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "CellposeModelMissing": "._methods",
        "INSTANCE_COLUMNS": "._tables",
        "METHODS": "._methods",
        "block_lookup": "._stitch",
        "cellpose_instances": "._methods",
        "combine_instance_partials": "._tables",
        "components_instances": "._methods",
        "export_rois": "._rois",
        "face_strips": "._stitch",
        "flows_instances": "._methods",
        "has_instances": "._run",
        "import_rois": "._rois",
        "instance_partials": "._tables",
        "instance_table": "._tables",
        "iter_instances": "._run",
        "match_faces": "._stitch",
        "match_neighbours": "._stitch",
        "merge_pairs": "._stitch",
        "provisional_ids": "._stitch",
        "read_instances": "._run",
        "relabel": "._stitch",
        "resolve_cellpose_model": "._methods",
        "run_instances": "._run",
        "sanitize_roi_name": "._rois",
        "stitch_blocks": "._stitch",
        "watershed_instances": "._methods",
    },
)
