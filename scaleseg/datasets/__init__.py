"""Synthetic and real example data: a deterministic generator of fluorescence-like images
with simulated experts, and loaders for the small real datasets in ``../shared/data``."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "DEMO_CONFIG": "._demo",
        "DemoSummary": "._demo_summary",
        "ExpertSample": "._shared",
        "FAR_OOD_KINDS": "._demo_summary",
        "InstanceSample": "._shared",
        "OOD_KINDS": "._synthetic",
        "SyntheticSample": "._synthetic",
        "demo_config": "._demo",
        "demo_plan": "._demo",
        "demo_summary": "._demo_summary",
        "load_dsb2018": "._shared",
        "load_pv_hc": "._shared",
        "make_dataset": "._synthetic",
        "make_sample": "._synthetic",
        "pv_hc_metadata": "._shared",
        "shared_data_dir": "._shared",
        "write_demo_archive": "._demo",
    },
)
