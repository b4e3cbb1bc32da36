"""Everything chatd keeps: rows, named transactions, and the databases behind them."""
