"""Prints the sample requests ranked in-process by retrieval and by the model, with titles and
hidden grades, to see what the model changes without starting any server.

    python -m rankserve.demo.show [--home DIR] [--top N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rankserve.demo.build import DemoPaths, ensure_demo
from rankserve.demo.candidates import CandidateMaker
from rankserve.demo.ids import item_id
from rankserve.demo.quality import model_order, ndcg_of_rows, retrieval_order
from rankserve.demo.queries import SAMPLE_REQUESTS
from rankserve.demo.relevance import Truth, grades


def format_page(
    title: str, rows, truth: Truth, request, titles: list[str], top: int
) -> list[str]:  # fmt: skip
    g = grades(truth, request, rows[:top])
    ndcg = ndcg_of_rows(truth, request, rows)
    lines = [f"  {title} (NDCG@10 {ndcg:.3f})"]
    lines += [
        f"    {i + 1:2d}. {item_id(int(r))}  grade {int(gr)}  {titles[int(r)]}"
        for i, (r, gr) in enumerate(zip(rows[:top], g, strict=True))
    ]
    return lines


def show(paths: DemoPaths, top: int = 5, version: int = 1) -> None:
    from rankserve.demo.model import load_scorer

    maker = CandidateMaker.open(paths.catalog_dir)
    truth = Truth.open(paths.truth_dir)
    titles = paths.titles()
    scorer = load_scorer(paths.version_dir(version))
    for req in SAMPLE_REQUESTS:
        r = maker(req)
        scores = scorer(r.context[None, :], maker.features(r.rows))
        print(req.describe())
        for line in format_page("retrieval", retrieval_order(r.rows, r.scores), truth, req,
                                titles, top):  # fmt: skip
            print(line)
        for line in format_page(f"model v{version}", model_order(r.rows, scores), truth, req,
                                titles, top):  # fmt: skip
            print(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rankserve.demo.show",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=None, help="cache root of the demo build")
    parser.add_argument("--top", type=int, default=5, help="items to print per ranking")
    args = parser.parse_args(argv)
    show(ensure_demo(args.home), top=args.top)


if __name__ == "__main__":
    main()
