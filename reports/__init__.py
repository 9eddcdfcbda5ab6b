"""Reports over the Parquet records rstlens writes.  Installed as `rstlens.reports`."""
