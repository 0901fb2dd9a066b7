"""The cost of pricing one row whose token counts were not seen before, side by side in one run:
genai-prices' `calc_price` (what the writer paid per row until 2026-12-02) against
`proxy.pricing.Pricer.cost` (rates read from genai-prices once a day per model).

    python bench/pricing_bench.py                 # 5 rounds × 3,000 rows per side
    python bench/pricing_bench.py --rows 10000 --rounds 9

Pin it to a core for steadier figures: `taskset -c 0 python bench/pricing_bench.py`.
Real traffic has new counts on nearly every call; the other scenarios answer the same usage
every time for an unpriced model, so they never show this cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from genai_prices import Usage, calc_price  # noqa: E402

from proxy.pricing import Pricer  # noqa: E402

MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"), ("azure", "gpt-4o")]


def per_row_us(price_one, rows: int, offset: int) -> float:
    started = time.perf_counter()
    for n in range(rows):
        provider, model = MODELS[n % len(MODELS)]
        price_one(provider, model, 1_000 + offset + n, (offset + n) % 500, 100 + n)
    return (time.perf_counter() - started) / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pricer = Pricer()
    pricer.warm()

    def library(provider: str, model: str, prompt: int, cached: int, completion: int) -> float:
        usage = Usage(input_tokens=prompt, cache_read_tokens=cached, output_tokens=completion)
        return float(calc_price(usage, model_ref=model, provider_id=provider).total_price)

    def ours(provider: str, model: str, prompt: int, cached: int, completion: int) -> float | None:
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "prompt_tokens_details": {"cached_tokens": cached}}
        return pricer.cost(provider, [model], usage)[0]

    for provider, model in MODELS:  # the same answers, and the rates read before the clock runs
        assert ours(provider, model, 12_345, 678, 910) == library(provider, model, 12_345, 678, 910)
    rounds: dict[str, list[float]] = {"genai-prices calc_price": [], "Pricer.cost": []}
    for r in range(args.rounds):
        offset = r * args.rows * 7  # counts never seen before in this run
        rounds["genai-prices calc_price"].append(per_row_us(library, args.rows, offset))
        rounds["Pricer.cost"].append(per_row_us(ours, args.rows, offset + 3))
    medians = {name: statistics.median(values) for name, values in rounds.items()}
    print(f"pricing a row with new token counts ({args.rounds} rounds × {args.rows:,} rows, medians)")
    for name, value in medians.items():
        print(f"  {name:<26} {value:8.1f} µs")
    print(f"  ratio                      {medians['genai-prices calc_price'] / medians['Pricer.cost']:8.1f}×")


if __name__ == "__main__":
    main()
