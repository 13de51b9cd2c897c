"""The demo's closing summary: what the run shows, in words, with its targets.

Everything is recomputed from the files the stages wrote (``demo.csv``, ``gt_summary.json``,
``ensemble.json``, the evaluation's ``per_image`` table, the QA ``images`` table and
``qa.json``), so the summary is only as good as the outputs, and two runs of the deterministic
demo print the same text. Timings are left out on purpose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["DemoCheck", "DemoSummary", "FAR_OOD_KINDS", "demo_summary"]

#: Synthetic OOD kinds that are far from the training images (another imaging modality: on
#: these the members agree and are confidently wrong, so U is low). The others are near OOD.
FAR_OOD_KINDS = ("stain",)


@dataclass(frozen=True)
class DemoCheck:
    """One measured claim of the demo and its target."""

    what: str
    value: float
    target: str
    met: bool

    def line(self) -> str:
        mark = "met" if self.met else "MISSED"
        return f"  [{mark:>6}] {self.what}: {self.value:.3g} (target {self.target})"


@dataclass
class DemoSummary:
    """The summary's lines and the checks behind them."""

    lines: list[str] = field(default_factory=list)
    checks: list[DemoCheck] = field(default_factory=list)

    @property
    def all_met(self) -> bool:
        return all(c.met for c in self.checks)

    def text(self) -> str:
        return "\n".join([*self.lines, "", "Targets:", *(c.line() for c in self.checks)])


def _auroc(pos: pd.Series, neg: pd.Series) -> float:
    from ..qa import auroc

    scores = np.concatenate([pos.to_numpy(np.float64), neg.to_numpy(np.float64)])
    labels = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    return auroc(scores, labels) if len(pos) and len(neg) else float("nan")


def demo_summary(out: str | Path) -> DemoSummary:
    """Summarise a finished ``scripts/demo`` output folder ``out`` (archive, gt, ensemble,
    predictions, evaluation, qa)."""
    out = Path(out)
    plan = pd.read_csv(out / "archive" / "demo.csv", keep_default_na=False).rename(
        columns={"ood": "kind"}
    )
    gt = json.loads((out / "gt" / "gt_summary.json").read_text())
    ens = json.loads((out / "ensemble" / "ensemble.json").read_text())
    ev = pd.read_parquet(out / "evaluation" / "per_image.parquet")
    experts = pd.read_parquet(out / "evaluation" / "experts.parquet")
    qa_info = json.loads((out / "qa" / "qa.json").read_text())
    qa = pd.read_parquet(out / "qa" / "images.parquet")
    qa = qa[["image", "U", "U_epistemic", "ood_distance", "review", "review_rule"]]
    t = plan.merge(qa, left_on="name", right_on="image", how="inner").merge(
        ev[["image", "dice", "expert_min", "expert_max"]], on="image", how="left"
    )
    test = t[t["split"] == "test"]
    expert_mean = float(experts.loc[experts["image"].isin(set(test["name"])), "dice"].mean())
    ood = t[t["split"] == "ood"]
    near = ood[~ood["kind"].isin(FAR_OOD_KINDS)]
    far = ood[ood["kind"].isin(FAR_OOD_KINDS)]
    n_train = int((plan["split"] == "train").sum())
    flagged = t["review"].fillna(False).astype(bool)
    within = test["dice"] >= test["expert_min"]
    r = qa_info.get("pearson_r")
    r = float("nan") if r is None else float(r)
    umin = qa_info.get("umin")
    thr = ens.get("ood_threshold") or {}
    dice_folds = [f["valid_dice"] for f in ens["folds"]]
    auc = {
        s: (_auroc(near[s], test[s]), _auroc(ood[s], test[s]), _auroc(far[s], test[s]))
        for s in ("U", "U_epistemic", "ood_distance")
    }
    best = max(auc, key=lambda s: auc[s][1])
    u_far = float(far["U"].mean()) if len(far) else float("nan")
    kinds = ", ".join(sorted(set(ood["kind"])))
    n_experts = len(str(plan["experts"].iloc[0]).split(";"))
    s = DemoSummary()
    s.lines += [
        f"Data: {n_train} training and {len(test)} test images (synthetic fluorescence, SNR "
        f"{plan['snr'].min():.1f}-{plan['snr'].max():.1f}), {len(ood)} out-of-distribution "
        f"images ({kinds}); {n_experts} simulated "
        f"experts who disagree (mean pairwise Dice {gt['mean_pairwise_expert_dice']:.3f}).",
        f"Ground truth: estimated by STAPLE from the experts; each expert scores "
        f"{gt['expert_dice_range'][0]:.2f}-{gt['expert_dice_range'][1]:.2f} Dice against it.",
        f"Model: an ensemble of {len(dice_folds)} U-Nets ({ens['encoder']}), validation Dice "
        + ", ".join(f"{d:.3f}" for d in dice_folds)
        + ".",
        f"Quality: {int(within.sum())} of {len(test)} test images are within the experts' range "
        f"(Dice against the GT at least the worst expert's); mean Dice {test['dice'].mean():.3f} "
        f"vs the experts' {test['expert_min'].mean():.3f}-{test['expert_max'].mean():.3f} "
        "(worst-best, mean over the test images).",
        f"Uncertainty ranks quality: Pearson r(U, Dice) = {r:.2f} on the test images "
        "(higher U, worse segmentation); Umin = "
        + (f"{umin:.3f}" if umin is not None else "undefined")
        + f" from the {qa_info['n_below']} test images below Dice tau = {qa_info['tau']:g} "
        f"(the experts' mean Dice on the test images: {expert_mean:.3f}).",
        f"Near-OOD ({', '.join(sorted(set(near['kind'])))}): U ranks them above the test images "
        f"with AUROC {auc['U'][0]:.2f}.",
    ]
    if len(far):
        s.lines.append(
            f"Far-OOD ({', '.join(sorted(set(far['kind'])))}, another modality): mean U "
            f"{u_far:.3f}, AUROC of U {auc['U'][2]:.2f} -- the members agree and are "
            f"confidently wrong; the feature distance separates them (AUROC "
            f"{auc['ood_distance'][2]:.2f})."
        )
    s.lines += [
        f"All OOD images: AUROC U {auc['U'][1]:.2f}, U_epistemic {auc['U_epistemic'][1]:.2f}, "
        f"ood_distance {auc['ood_distance'][1]:.2f}.",
        f"Review flags (U >= Umin, or feature distance >= {thr.get('value', float('nan')):.3g}, "
        f"calibrated without labels on held-out training images): "
        f"{int(flagged[ood.index].sum())} of {len(ood)} OOD images and "
        f"{int(flagged[test.index].sum())} of {len(test)} test images flagged.",
    ]
    for _, row in ood.sort_values("name").iterrows():
        s.lines.append(
            f"  {row['name']:<22} U {row['U']:.3f}  distance {row['ood_distance']:.4g}  "
            f"flag: {row['review_rule'] or 'none'}"
        )
    s.lines.append(f"Report: {out / 'qa' / 'report.html'}")
    s.checks += [
        DemoCheck("test images within the experts' range (share)", within.mean(), ">= 0.75",
                  bool(within.mean() >= 0.75)),
        DemoCheck("OOD AUROC of U (near-OOD kinds)", auc["U"][0], ">= 0.90",
                  bool(auc["U"][0] >= 0.9)),
        DemoCheck(f"OOD AUROC of the best score ({best}, all OOD)", auc[best][1], ">= 0.95",
                  bool(auc[best][1] >= 0.95)),
        DemoCheck("Pearson r(U, Dice) on the test images", r, "<= -0.3", bool(r <= -0.3)),
        DemoCheck("OOD images flagged (share)", flagged[ood.index].mean(), "= 1",
                  bool(flagged[ood.index].all())),
        DemoCheck("test images flagged (share)", flagged[test.index].mean(), "<= 0.5",
                  bool(flagged[test.index].mean() <= 0.5)),
        DemoCheck("mean pairwise expert Dice", gt["mean_pairwise_expert_dice"], "0.755 +- 0.03",
                  bool(abs(gt["mean_pairwise_expert_dice"] - 0.755) <= 0.03)),
    ]  # fmt: skip
    return s
