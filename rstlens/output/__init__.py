"""Output: the Parquet contracts (`schema`), Arrow columns from numpy (`arrow`), connection
records (`records`, with the address-text and Community ID kernels in `records_kernel`) and
atomic Parquet files (`writer`)."""
