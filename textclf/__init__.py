"""textclf: batch text classification on a Parquet lake, orchestrated by Airflow."""

__version__ = "0.1.0"
