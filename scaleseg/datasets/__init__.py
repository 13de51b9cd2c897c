"""Synthetic and real example data: a deterministic generator of fluorescence-like images
with simulated experts, and loaders for the small real datasets in ``../shared/data``."""

from ._demo import demo_plan, write_demo_archive
from ._shared import (
    ExpertSample,
    InstanceSample,
    load_dsb2018,
    load_pv_hc,
    pv_hc_metadata,
    shared_data_dir,
)
from ._synthetic import OOD_KINDS, SyntheticSample, make_dataset, make_sample

__all__ = [
    "OOD_KINDS",
    "ExpertSample",
    "InstanceSample",
    "SyntheticSample",
    "demo_plan",
    "load_dsb2018",
    "load_pv_hc",
    "make_dataset",
    "make_sample",
    "pv_hc_metadata",
    "shared_data_dir",
    "write_demo_archive",
]
