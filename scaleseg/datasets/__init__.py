"""Synthetic and real example data: a deterministic generator of fluorescence-like images
with simulated experts, and loaders for the small real datasets in ``../shared/data``."""

from ._demo import DEMO_CONFIG, demo_config, demo_plan, write_demo_archive
from ._demo_summary import FAR_OOD_KINDS, DemoSummary, demo_summary
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
    "DEMO_CONFIG",
    "FAR_OOD_KINDS",
    "OOD_KINDS",
    "DemoSummary",
    "ExpertSample",
    "InstanceSample",
    "SyntheticSample",
    "demo_config",
    "demo_plan",
    "demo_summary",
    "load_dsb2018",
    "load_pv_hc",
    "make_dataset",
    "make_sample",
    "pv_hc_metadata",
    "shared_data_dir",
    "write_demo_archive",
]
