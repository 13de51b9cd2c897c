"""Which images train, and where their labels come from (orchestration: metadata only)."""

from __future__ import annotations

from pathlib import Path

from ..io import EXPERT_PREFIX, ImageRef, join_url, list_labels, location_exists, open_collection
from ..tables import read_image_list
from ._data import TrainItem

__all__ = ["GT_LABEL", "items_from_gt", "select_images", "training_items"]

GT_LABEL = "est_gt"


def select_images(
    refs: list[ImageRef],
    names_file: str | None,
    where: str | None,
    *,
    names: list[str] | None = None,
) -> list[ImageRef]:
    """Keep the images named in ``names_file`` (:func:`scaleseg.tables.read_image_list`,
    optionally filtered by ``where``: ``column=value``) or in ``names``; an unknown name is an
    error."""
    if names is not None:
        if names_file is not None:
            raise ValueError("give a list of image names or an image list file, not both")
        source, wanted = "the image list", set(names)
    elif names_file is None:
        if where:
            raise ValueError("--where needs --images-file (a CSV with the column)")
        return refs
    else:
        source, wanted = names_file, set(read_image_list(names_file, where=where))
    known = {r.name for r in refs}
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(
            f"{source}: images not in the collection: {', '.join(unknown[:10])}"
            + (f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else "")
        )
    return [r for r in refs if r.name in wanted]


def training_items(
    input_url: str,
    *,
    gt: str | None = None,
    label: str | None = None,
    names_file: str | None = None,
    where: str | None = None,
    instance_label: str | None = None,
    names: list[str] | None = None,
) -> tuple[list[TrainItem], list[ImageRef], list[str]]:
    """Pair every selected image with its labels.

    Label source, in order: ``gt`` (the output folder of ``scaleseg gt``:
    ``<gt>/images/<name>.zarr`` label ``est_gt``); ``label`` (a label group of the image); the
    image's own ``est_gt``; its only expert mask. Images with several experts and none of these
    are returned separately (``needs_vote``) so the caller can estimate a majority vote first.
    ``instance_label`` names a label group of the image with instance ids, used for flow
    targets (without it, flow targets come from connected components of the labels).

    Returns
    -------
    items, needs_vote, warnings
    """
    refs = select_images(open_collection(input_url), names_file, where, names=names)
    items: list[TrainItem] = []
    needs_vote: list[ImageRef] = []
    warnings: list[str] = []
    for ref in refs:
        names = list_labels(ref)
        experts = [n for n in names if n.startswith(EXPERT_PREFIX)]
        if gt is not None:
            url = join_url(gt, "images", f"{ref.name}.zarr")
            if location_exists(url) and GT_LABEL in list_labels(url):
                items.append(TrainItem(ref.url, url, GT_LABEL, name=ref.name))
            else:
                warnings.append(f"{ref.name}: no estimated GT in {gt}; not used for training")
        elif label is not None:
            if label not in names:
                raise ValueError(
                    f"{ref.url} has no label image {label!r} (found: {', '.join(names) or 'none'})"
                )
            if instance_label is not None and instance_label not in names:
                raise ValueError(f"{ref.url} has no label image {instance_label!r}")
            items.append(
                TrainItem(ref.url, ref.url, label, instance_name=instance_label, name=ref.name)
            )
        elif GT_LABEL in names:
            items.append(TrainItem(ref.url, ref.url, GT_LABEL, name=ref.name))
        elif len(experts) == 1:
            items.append(TrainItem(ref.url, ref.url, experts[0], name=ref.name))
        elif len(experts) > 1:
            needs_vote.append(ref)
        else:
            warnings.append(f"{ref.name}: no labels; not used for training")
    return items, needs_vote, warnings


def items_from_gt(refs: list[ImageRef], gt: str | Path) -> list[TrainItem]:
    """Training items whose labels are ``est_gt`` in the ``scaleseg gt`` output ``gt``."""
    return [
        TrainItem(r.url, join_url(str(gt), "images", f"{r.name}.zarr"), GT_LABEL, name=r.name)
        for r in refs
    ]
