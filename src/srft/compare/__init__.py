"""Compare: pure paired statistics, harness outputs -> systems x instances, tables and plots."""
