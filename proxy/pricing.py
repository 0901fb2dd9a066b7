"""Cost of a call from its provider, model and token counts: genai-prices, or the operator's prices.

genai-prices is maintained against the providers' price pages; we only map our provider
names onto its ids. Where neither it nor the config knows a model, the cost stays NULL
and the row says why: a made-up number would be worse than none.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from genai_prices import Usage, calc_price

#: Our built-in provider names → genai-prices provider ids (Hyperbolic is priced as served via Hugging Face).
PRICE_PROVIDERS = {"openai": "openai", "azure": "azure", "hyperbolic": "huggingface_hyperbolic"}
#: The model `Pricer.warm` prices at start-up.
WARM_MODEL = "gpt-4o-mini"


@dataclass(frozen=True)
class Price:
    """The operator's price for a model, in USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        cached_rate = self.input if self.cached_input is None else self.cached_input
        uncached = input_tokens - cached_tokens
        return (uncached * self.input + cached_tokens * cached_rate + output_tokens * self.output) / 1_000_000


class Pricer:
    def __init__(self, overrides: Mapping[str, Price] | None = None, provider_ids: Mapping[str, str] | None = None) -> None:
        self.overrides = dict(overrides or {})
        self.provider_ids = {**PRICE_PROVIDERS, **(provider_ids or {})}

    def warm(self) -> None:
        """Load genai-prices' data now (about 30 ms), not in the middle of the first priced call."""
        _rates("openai", WARM_MODEL, _today())

    def cost(self, provider: str, models: Iterable[str | None], usage: Mapping[str, Any]) -> tuple[float | None, str | None]:
        """(USD, None), or (None, why not). `models` are names to try, most precise first."""
        if provider == "mock":
            return 0.0, None
        tokens = _tokens(usage)
        if tokens is None:
            return None, "no token counts: cost unknown"
        names = [m for m in dict.fromkeys(models) if m]
        for name in names:
            price = self.overrides.get(f"{provider}/{name}") or self.overrides.get(name)
            if price is not None:
                return round(price.cost(*tokens), 10), None
        price_id = self.provider_ids.get(provider)
        for name in names if price_id else ():  # never guess: a local "gpt-4o" is not OpenAI's
            cost = _library_cost(price_id, name, *tokens)
            if cost is not None:
                return cost, None
        shown = names[0] if names else "?"
        return None, f"no price known for {provider}/{shown}: add it under [prices] in the config"


def _tokens(usage: Mapping[str, Any]) -> tuple[int, int, int] | None:
    prompt = usage.get("prompt_tokens")
    if not isinstance(prompt, int):
        return None
    completion = usage.get("completion_tokens") or 0
    details = usage.get("prompt_tokens_details")
    cached = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return prompt, min(int(cached), prompt), int(completion)


def _library_cost(provider_id: str, model: str, input_tokens: int, cached: int, output: int) -> float | None:
    """genai-prices' answer for these counts. Its own arithmetic costs ~90 µs a call (Decimal,
    and the price's units resolved anew each time), which every row with new token counts
    would pay: for a price without tiers the cost is affine in the three counts, so it is
    computed from rates taken from genai-prices once a day per model (exactly its answer)."""
    rates = _rates(provider_id, model, _today())
    if rates is None:
        return None
    if rates is TIERED:
        return _exact_cost(provider_id, model, input_tokens, cached, output)
    base, per_input, per_cached, per_output = rates
    return float(base + per_input * input_tokens + per_cached * cached + per_output * output)


#: A price whose rate changes with the counts (a tier past some context length).
TIERED = ("tiered",)
#: Counts the rates are read at: the unit of each rate, and two checks, one small, one large,
#: that the price is affine from the first token to past any model's context length.
PER = 1_000_000
CHECKS = ((1_000, 400, 700), (3 * PER, PER, 2 * PER))


def _today() -> int:
    """The UTC day number: the rates' cache key (half the cost of `datetime.now(UTC).date()`)."""
    return int(time.time() // 86_400)


@lru_cache(maxsize=4_096)
def _rates(provider_id: str, model: str, day: int) -> tuple[Decimal, Decimal, Decimal, Decimal] | tuple[str] | None:
    """(fixed, per input token, more per cached token, per output token), TIERED, or None for
    a model genai-prices does not know. `day`: prices change on dates, so rates are re-read daily."""
    base = _decimal_cost(provider_id, model, 0, 0, 0)
    if base is None:
        return None
    try:
        per_input = (_decimal_cost(provider_id, model, PER, 0, 0) - base) / PER  # type: ignore[operator]
        per_cached = (_decimal_cost(provider_id, model, PER, PER, 0) - base) / PER - per_input  # type: ignore[operator]
        per_output = (_decimal_cost(provider_id, model, 0, 0, PER) - base) / PER  # type: ignore[operator]
        rates = (base, per_input, per_cached, per_output)
        for counts in CHECKS:
            if _decimal_cost(provider_id, model, *counts) != base + sum(r * n for r, n in zip(rates[1:], counts)):
                return TIERED
    except Exception:  # a price these counts do not suit: each call is priced by genai-prices itself
        return TIERED
    return rates


@lru_cache(maxsize=65_536)
def _exact_cost(provider_id: str, model: str, input_tokens: int, cached: int, output: int) -> float | None:
    cost = _decimal_cost(provider_id, model, input_tokens, cached, output)
    return None if cost is None else float(cost)


def _decimal_cost(provider_id: str, model: str, input_tokens: int, cached: int, output: int) -> Decimal | None:
    try:
        result = calc_price(
            Usage(input_tokens=input_tokens, cache_read_tokens=cached, output_tokens=output),
            model_ref=model,
            provider_id=provider_id,
        )
    except LookupError:
        return None
    return result.total_price
