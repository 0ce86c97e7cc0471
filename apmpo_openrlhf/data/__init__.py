"""Benchmark loaders (``sources``), prompt-dataset preparation (``prepare``, CLI
``python -m apmpo_openrlhf.data``) and the downloader (``fetch``)."""

from .sources import (
    MATH_BENCHMARKS,
    MATH_EVAL_BENCHMARKS,
    DataFormatError,
    load_bird_dev,
    load_geometry3k,
    load_math,
    load_math_file,
    load_spider_dev,
    load_sql,
)

__all__ = [
    "MATH_BENCHMARKS",
    "MATH_EVAL_BENCHMARKS",
    "DataFormatError",
    "load_bird_dev",
    "load_geometry3k",
    "load_math",
    "load_math_file",
    "load_spider_dev",
    "load_sql",
]
