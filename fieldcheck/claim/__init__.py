"""The claim language: criteria (``r2 > 0.9``), the statistics behind them (intervals,
p-values, corrections), the ``assert_*`` functions, and the ``ClaimResult`` they record."""
