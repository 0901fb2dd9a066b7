"""Run by test_e2e_instructor.py inside its own venv (instructor pins an older openai):
instructor's modes against the proxy's mock; prints one JSON line of results."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Optional

import instructor
from openai import OpenAI
from pydantic import BaseModel, Field


class Kind(str, Enum):
    BOOK = "book"
    FILM = "film"


class Work(BaseModel):
    title: str
    kind: Kind
    year: int = Field(ge=1800, le=2100)


class Review(BaseModel):
    summary: str
    works: list[Work] = Field(min_length=1)
    rating: Optional[float] = Field(default=None, ge=0, le=5)


def main(base_url: str, api_key: str) -> None:
    results = {}
    for name in ("TOOLS", "JSON", "JSON_SCHEMA"):
        client = instructor.from_openai(OpenAI(base_url=base_url, api_key=api_key, max_retries=0), mode=instructor.Mode[name])
        review = client.chat.completions.create(
            model="mock/echo",
            response_model=Review,
            max_retries=0,
            messages=[{"role": "user", "content": "Review two classics"}],
        )
        results[name] = review.model_dump(mode="json")
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:3])
