#!/usr/bin/env python3
"""Prints the demo's comparison of an analysis (result.json) with the phantom's ground truth
(truth.json). Standard library only. Not for diagnostic use."""
import json
import math
import sys


def dist(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def main(truth_path, result_path):
    truth = json.load(open(truth_path))
    result = json.load(open(result_path))
    true_c = [(c["name"], (c["X"], c["Y"], c["Z"])) for c in truth["centroids"]]
    found = result["vertebrae"]
    print(f"vertebrae: {len(found)} found, {len(true_c)} in the ground truth")
    print(f"  {'found':<6} {'conf':>5}  {'nearest truth':<13} {'dist mm':>7}  id")
    correct = 0
    for v in found:
        name, d = min(((n, dist(v["centroid_lps_mm"], c)) for n, c in true_c),
                      key=lambda t: t[1], default=("-", float("inf")))
        ok = d <= 20.0 and name == v["name"]
        correct += ok
        print(f"  {v['name']:<6} {v['confidence']:>5.2f}  {name:<13} {d:>7.1f}  "
              f"{'correct' if ok else 'WRONG'}")
    if found:
        print(f"  identification: {correct}/{len(found)} correct "
              f"({100.0 * correct / len(found):.0f} %)")
    targets = [l for l in truth["lesions"] if l["is_target"]]
    print(f"lesions: {len(result['lesions'])} found, {len(targets)} target lesion(s) in the truth")
    for l in targets:
        near = [p for p in result["lesions"] if dist(p["centre_lps_mm"], l["centre"]) <= 15.0]
        print(f"  truth {l['class']:<20} at {l['vertebra']:<4}: "
              f"{'found as ' + near[0]['class'] if near else 'MISSED'}")
    for p in result["lesions"]:
        print(f"  found {p['class']:<20} score {p['score']:.2f} in {p['vertebra']}")
    t = result["timings_s"]
    print("analysis stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in t.items()))
    for w in result["warnings"]:
        print(f"warning: {w}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
