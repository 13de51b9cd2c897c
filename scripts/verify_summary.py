"""One summary table per verification script, with the targets beside the measured values.

    python scripts/verify_summary.py pv  OUT     (scripts/verify_pv_hc)
    python scripts/verify_summary.py ood OUT     (scripts/verify_ood)
    python scripts/verify_summary.py dsb OUT     (scripts/verify_dsb)
    python scripts/verify_summary.py seeds OUT1 OUT2 OUT3 ...   (verify_pv_hc with SEED=0, 1, 2)

Everything is read from the files the stages wrote; nothing is recomputed from images.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _row(rows, what, target, value, met=None):
    if isinstance(value, float):
        value = "undefined" if not np.isfinite(value) else f"{value:.3f}"
    rows.append((what, target, str(value), "" if met is None else ("yes" if met else "NO")))


def _print(title, rows):
    w = [
        max(len(r[i]) for r in [("measure", "target", "measured", "met"), *rows]) for i in range(4)
    ]
    print(f"\n{title}  ({dt.date.today().isoformat()})")
    for r in [("measure", "target", "measured", "met"), tuple("-" * n for n in w), *rows]:
        print("  " + "  ".join(c.ljust(n) for c, n in zip(r, w)))


def _ood_rows(rows, out: Path, groups: dict[str, list[str]]):
    """AUROC of each score and of the review flag, per OOD group (kinds pooled)."""
    from scaleseg.qa import auroc

    qa = pd.read_parquet(out / "qa" / "images.parquet")
    qa = qa[qa["status"] == "ok"]
    ind = qa[qa["ood"].notna() & ~qa["ood"].fillna(False).astype(bool)]  # unlabelled: left out
    flag = qa["review"].fillna(False).astype(bool)
    by_distance = qa["review_rule"].str.split("+").apply(lambda r: "distance" in r)
    res = {}
    for group, kinds in groups.items():
        ood = qa[qa["ood_kind"].isin(kinds)]
        if not len(ood):
            continue
        y = np.r_[np.ones(len(ood), bool), np.zeros(len(ind), bool)]
        for score in ("U", "U_epistemic", "ood_distance"):
            s = np.r_[ood[score].to_numpy(float), ind[score].to_numpy(float)]
            res[(group, score)] = auroc(s, y)
        res[(group, "flag")] = auroc(np.r_[flag[ood.index], flag[ind.index]].astype(float), y)
        if "review_score" in qa:  # the rule's own continuous score (both rules, threshold 1)
            rs = np.r_[ood["review_score"].to_numpy(float), ind["review_score"].to_numpy(float)]
            res[(group, "review_score")] = auroc(rs, y)
        res[(group, "recall")] = float(flag[ood.index].mean())
        dist = np.r_[by_distance[ood.index], by_distance[ind.index]].astype(float)
        res[(group, "distance_rule")] = auroc(dist, y)
        res[(group, "distance_recall")] = float(by_distance[ood.index].mean())
        res[(group, "n")] = len(ood)
    return res, ind, flag


#: image-score variants and the qa folder verify_pv_hc writes for each
VARIANTS = {"U_border": "qa-border", "U_novel": "qa-novel"}


def pv(out: Path) -> None:
    ev = pd.read_parquet(out / "eval" / "per_image.parquet")
    experts = pd.read_parquet(out / "eval" / "experts.parquet")
    split = pd.read_csv(out / "split.csv", keep_default_na=False, dtype=str)
    test_names = set(split.loc[split["split"] == "test", "name"])
    ev = ev[ev["image"].isin(test_names)]
    experts = experts[experts["image"].isin(test_names)]
    qa_info = json.loads((out / "qa" / "qa.json").read_text())
    ens = json.loads((out / "ensemble" / "ensemble.json").read_text())
    train_s = (
        float((out / "train_seconds").read_text())
        if (out / "train_seconds").exists()
        else float("nan")
    )
    expert_mean = float(experts["dice"].mean())
    within = int((ev["dice"] >= ev["expert_min"]).sum())
    r = qa_info.get("pearson_r")
    r = float("nan") if r is None else float(r)
    rows: list = []
    seed = ens["train"].get("seed")
    _row(rows, "held-out PV images", "9", len(ev))
    _row(
        rows,
        "fold validation Dice",
        "(report)",
        ", ".join(f"{f['valid_dice']:.3f}" for f in ens["folds"]),
    )
    _row(rows, "mean Dice vs estimated GT", f">= experts' mean - 0.03 = {expert_mean - 0.03:.3f}",
         float(ev["dice"].mean()), ev["dice"].mean() >= expert_mean - 0.03)  # fmt: skip
    _row(rows, "images >= their worst expert", f"{len(ev)} of {len(ev)}", f"{within} of {len(ev)}",
         within == len(ev))  # fmt: skip
    _row(rows, "Pearson r(U, Dice), held-out", "<= -0.6", r, r <= -0.6)
    for variant in VARIANTS:
        if (out / VARIANTS[variant] / "qa.json").exists():
            rb = json.loads((out / VARIANTS[variant] / "qa.json").read_text()).get("pearson_r")
            rb = float("nan") if rb is None else float(rb)
            _row(rows, f"Pearson r({variant}, Dice), held-out", "<= -0.6", rb, rb <= -0.6)
    _row(rows, "training time (min)", "<= 40", train_s / 60, train_s <= 40 * 60)
    thr = (ens.get("ood_threshold") or {}).get("value", float("nan"))
    _row(rows, "distance threshold (calibrated)", "(report)", float(thr))
    if (out / "qa" / "images.parquet").exists():
        qa = pd.read_parquet(out / "qa" / "images.parquet")
        if "ood_kind" in qa and qa["ood"].fillna(False).any():
            groups = {
                "far": sorted(k for k in set(qa["ood_kind"]) if k.startswith("far")),
                "near": sorted(k for k in set(qa["ood_kind"]) if k.startswith("near")),
            }
            res, ind, flag = _ood_rows(rows, out, groups)
            pv_by_distance = int(ind["review_rule"].str.contains("distance").sum())
            _row(rows, "held-out PV flagged by the distance rule", "<= 1 of 9",
                 f"{pv_by_distance} of {len(ind)}", pv_by_distance <= 1)  # fmt: skip
            _row(
                rows,
                "held-out PV flagged (any rule)",
                "(report)",
                f"{int(flag[ind.index].sum())} of {len(ind)}",
            )
            if qa_info.get("metric") in ind:
                by_u = ind[flag[ind.index] & ~ind["review_rule"].str.contains("distance")]
                low = int((by_u[qa_info["metric"]] < qa_info["tau"]).sum())
                _row(rows, f"  of these by the U rule only (Dice < tau = {qa_info['tau']:g})",
                     "(report)", f"{len(by_u)} ({low})")  # fmt: skip
            for g in ("far", "near"):
                if (g, "n") not in res:
                    continue
                t = ">= 0.95" if g == "far" else "(report)"
                if (g, "review_score") in res:
                    v = res[(g, "review_score")]
                    _row(rows, f"{g} OOD ({res[(g, 'n')]}): AUROC of the flag rule's review score",
                         t, v, v >= 0.95 if g == "far" else None)  # fmt: skip
                _row(rows, f"{g} OOD: AUROC of the flag itself (0/1; quality flags on PV count "
                     "as false alarms)", "(report)", res[(g, "flag")])  # fmt: skip
                _row(rows, f"{g} OOD: recall of the flag rule", ">= 0.9" if g == "far" else "(report)",
                     res[(g, "recall")], res[(g, "recall")] >= 0.9 if g == "far" else None)  # fmt: skip
                _row(rows, f"{g} OOD: AUROC of the distance rule alone", "(report)",
                     res[(g, "distance_rule")])  # fmt: skip
                _row(rows, f"{g} OOD: recall of the distance rule alone", "(report)",
                     res[(g, "distance_recall")])  # fmt: skip
                for score in ("ood_distance", "U", "U_epistemic"):
                    _row(rows, f"{g} OOD: AUROC of {score}", "(report)", res[(g, score)])
    _print(f"PV-in-HC verification (seed {seed}; targets of issue 13)", rows)


def ood(out: Path) -> None:
    qa = pd.read_parquet(out / "qa" / "images.parquet")
    qa_info = json.loads((out / "qa" / "qa.json").read_text())
    rows: list = []
    kinds = sorted(k for k in set(qa["ood_kind"]) if k)
    res, ind, flag = _ood_rows(rows, out, {k: [k] for k in kinds} | {"all": kinds})
    for g in [*kinds, "all"]:
        for score in ("U", "U_epistemic", "ood_distance", "review_score", "flag"):
            if (g, score) not in res:
                continue
            tgt = ">= 0.95" if (g, score) == ("all", "ood_distance") else "(report)"
            v = res[(g, score)]
            _row(rows, f"{g} ({res[(g, 'n')]}): AUROC of {score}", tgt, v,
                 v >= 0.95 if tgt != "(report)" else None)  # fmt: skip
    _row(rows, "all OOD: recall of the flag rule", "1.0", res[("all", "recall")],
         res[("all", "recall")] == 1.0)  # fmt: skip
    _row(rows, "in-distribution test images flagged", "(report)",
         f"{int(flag[ind.index].sum())} of {len(ind)}")  # fmt: skip
    r = qa_info.get("pearson_r")
    _row(rows, "Pearson r(U, Dice), test", "(report)", float("nan") if r is None else float(r))
    _print("Synthetic OOD verification", rows)


def dsb(out: Path) -> None:
    rows: list = []
    for method in ("flows", "watershed"):
        f = out / f"eval-{method}" / "summary.parquet"
        if not f.exists():
            continue
        s = pd.read_parquet(f).set_index("metric")
        for m in ("map", "ap50", "aji"):
            if m in s.index:
                _row(rows, f"{method}: mean {m} (held-out)", "(report)", float(s.loc[m, "mean"]))
    _print("DSB2018 instance verification", rows)


def seeds(outs: list[Path]) -> None:
    """r(score, Dice) per seed on the held-out PV images, and Spearman rho of per-image scores
    between seeds (the stability of the ranking), for U and the variants whose qa folders
    exist (:data:`VARIANTS`)."""
    from itertools import combinations

    from scipy.stats import spearmanr

    rows: list = []
    for score, qa_dir in (("U", "qa"), *VARIANTS.items()):
        u = {}
        for out in outs:
            if not (out / qa_dir / "qa.json").exists():
                continue
            info = json.loads((out / qa_dir / "qa.json").read_text())
            seed = json.loads((out / "ensemble" / "ensemble.json").read_text())["train"]["seed"]
            qa = pd.read_parquet(out / qa_dir / "images.parquet")
            test = qa[qa["qa_test"]].set_index("image")
            u[seed] = test[score]
            r = float("nan") if info.get("pearson_r") is None else float(info["pearson_r"])
            if score == "U":
                ev = pd.read_parquet(out / "eval" / "per_image.parquet").set_index("image")
                d = ev.loc[test.index, "dice"]
                _row(rows, f"seed {seed}: mean held-out Dice", "(report)", float(d.mean()))
            _row(rows, f"seed {seed}: Pearson r({score}, Dice)", "<= -0.6", r, r <= -0.6)
            ok = test[score].notna() & test["dice"].notna()
            rho_d = float(spearmanr(test.loc[ok, score], test.loc[ok, "dice"]).statistic)
            _row(rows, f"seed {seed}: Spearman rho({score}, Dice)", "(report)", rho_d)
            low = test.loc[ok, "dice"].idxmin()  # how much one image decides r on 9 images
            rest = ok & (test.index != low)
            r_rest = float(np.corrcoef(test.loc[rest, score], test.loc[rest, "dice"])[0, 1])
            _row(rows, f"seed {seed}: Pearson r({score}, Dice) without {low} (lowest Dice)",
                 "(report)", r_rest)  # fmt: skip
        for a, b in combinations(sorted(u), 2):
            common = u[a].index.intersection(u[b].index)
            rho = float(spearmanr(u[a][common], u[b][common]).statistic)
            _row(rows, f"Spearman rho of {score}, seeds {a} vs {b}", ">= 0.8", rho, rho >= 0.8)
    _print("PV-in-HC: image scores across seeds", rows)


if __name__ == "__main__":
    mode, folders = sys.argv[1], [Path(a) for a in sys.argv[2:]]
    if mode == "seeds":
        seeds(folders)
    else:
        {"pv": pv, "ood": ood, "dsb": dsb}[mode](folders[0])
