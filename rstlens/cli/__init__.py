"""The `rstlens` command line (click): `main` and the console script in `main`, one module per
sub-command (`analyze`, `explain`, `packets`), shared argument habits in `args`, the printed
summary in `summary`."""
