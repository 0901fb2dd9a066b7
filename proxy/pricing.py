"""Cost of a call from its provider, model and token counts: genai-prices, or the operator's prices.

genai-prices is maintained against the providers' price pages; we only map our provider
names onto its ids. Where neither it nor the config knows a model, the cost stays NULL
and the row says why: a made-up number would be worse than none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from genai_prices import Usage, calc_price

#: Our built-in provider names → genai-prices provider ids (Hyperbolic is priced as served via Hugging Face).
PRICE_PROVIDERS = {"openai": "openai", "azure": "azure", "hyperbolic": "huggingface_hyperbolic"}


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


@lru_cache(maxsize=65_536)
def _library_cost(provider_id: str, model: str, input_tokens: int, cached: int, output: int) -> float | None:
    """genai-prices' answer, remembered: its Decimal arithmetic costs ~70 µs a call."""
    try:
        result = calc_price(
            Usage(input_tokens=input_tokens, cache_read_tokens=cached, output_tokens=output),
            model_ref=model,
            provider_id=provider_id,
        )
    except LookupError:
        return None
    return float(result.total_price)
