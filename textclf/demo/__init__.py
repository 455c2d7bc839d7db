"""Demo: the project's own seeded corpus, and every stage run on it without Airflow."""

from textclf.demo.stage import DemoConfig, DemoResult, run_demo

__all__ = ["DemoConfig", "DemoResult", "run_demo"]
